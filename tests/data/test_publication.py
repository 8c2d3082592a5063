"""What a published dataset says about itself: the dataset card (read back by ``datasets``),
the Croissant file (validated and iterated by ``mlcroissant``) and the report page (rendered by
headless Chromium)."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from fairsynth.app.config import ConfigError, load_params
from fairsynth.app.stages.audit import stage_audit
from fairsynth.app.stages.generate import stage_generate
from fairsynth.app.stages.reference import stage_reference
from fairsynth.app.stages.report import stage_report
from fairsynth.data.card import size_category

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def published(tmp_path, tiny_world):
    """A tiny run, reference to report: (params, report folder, manifest of accepted samples)."""
    p = tmp_path / "params.yaml"
    p.write_text(
        f"reference: {{path: {tmp_path / 'ref'}, n: 60, seed: 1}}\n"
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        "target: {marginals: {skin: {light: 1.0, dark: 0.0}}}\n"
        "guidance: {mode: distribution, loss: chi2, strength: 1.0, shift: 0, batch_size: 3}\n"
        "verify: {confidence: 0.0}\n"
        "generate: {mode: standalone, n: 5, budget: 15, seed: 3}\n"
        f"output: {{dir: {tmp_path / 'out'}, shard_size: 2}}\n"
        "card: {name: tiny-test-set, license: mit}\n"
    )
    params = load_params(p)
    stage_reference(params)
    audit = stage_audit(params, tmp_path / "audit")
    stage_generate(params, audit, progress=False)
    stage_report(params, audit, tmp_path / "report")
    frame = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    return params, tmp_path / "report", frame[frame["accepted"]]


def _card(report):
    text = (report / "README.md").read_text()
    assert text.startswith("---\n")
    header, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(header), body


def test_card_header_follows_the_hub_conventions(published):
    params, report, acc = published
    header, body = _card(report)
    assert header["license"] == "mit" and header["pretty_name"] == "tiny-test-set"
    assert "synthetic" in header["tags"] and header["size_categories"] == ["n<1K"]
    assert header["task_categories"] == ["image-classification"]
    (config,) = header["configs"]
    (files,) = config["data_files"]
    assert files["split"] == "train"
    shards = sorted(set(acc["shard"]))
    assert [p.rsplit("/", 1)[1] for p in files["path"]] == shards
    assert all((report / p).is_file() for p in files["path"])  # relative to the card
    # the body says what it is, what it cost, how the verifier errs, how to load it
    for needle in ("## What it is", "## The reference audit", "## How it was filled",
                   "## Verifiers", "## Known limitations", "## How to load", "## Provenance",
                   "load_dataset", "fairsynth.data.feed", "`light`"):  # fmt: skip
        assert needle in body, needle
    assert "true \\ verified" in body  # the audit's confusion matrices


def test_datasets_reads_the_card_configs_as_the_manifest(published, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _, report, acc = published
    ds = datasets.load_dataset(str(report), split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == len(acc) > 0
    got = {row["__key__"]: row["json"]["cell"] for row in ds}
    assert got == dict(zip(acc["key"], acc["cell"], strict=True))
    assert ds[0]["png"].size == (32, 32)


# mlcroissant caches what it extracted by contentUrl, the same relative path in every tmp_path:
# each check runs in its own process with its own cache
CROISSANT_CHECK = """
import json, sys
import mlcroissant as mlc
ds = mlc.Dataset(jsonld=sys.argv[1])
issues = ds.metadata.ctx.issues
rows = []
for r in ds.records(record_set="samples"):
    row = {k.split("/", 1)[1]: v for k, v in r.items()}
    row["image"] = list(row["image"].size)
    rows.append({k: v.decode() if isinstance(v, bytes) else v for k, v in row.items()})
print(json.dumps({"errors": sorted(issues.errors), "warnings": sorted(issues.warnings),
                  "rows": rows}))
"""


def _croissant_check(path, tmp_path) -> dict:
    env = {**os.environ, "CROISSANT_CACHE": str(tmp_path / "croissant-cache")}
    run = subprocess.run([sys.executable, "-c", CROISSANT_CHECK, str(path)], env=env,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_croissant_validates_and_iterates_the_published_samples(published, tmp_path):
    pytest.importorskip("mlcroissant")
    params, report, acc = published
    meta = json.loads((report / "croissant.json").read_text())
    assert "http://mlcommons.org/croissant/RAI/1.0" in meta["conformsTo"]
    for key in ("rai:dataCollection", "rai:dataBiases", "rai:dataLimitations",
                "rai:dataUseCases", "rai:annotationsPerItem", "rai:personalSensitiveInformation",
                "prov:wasGeneratedBy"):  # fmt: skip
        assert meta[key], key
    assert meta["rai:dataCollectionType"] == ["Synthetic"]
    assert any("accuracy" in b for b in meta["rai:dataBiases"])  # the verifier's confusion
    checked = _croissant_check(report / "croissant.json", tmp_path)
    assert checked["errors"] == [] and checked["warnings"] == []
    rows = {r["key"]: r for r in checked["rows"]}
    assert sorted(rows) == sorted(acc["key"])  # published samples only, not the rejected
    for _, sample in acc.iterrows():
        row = rows[sample["key"]]
        assert row["cell"] == sample["cell"] and row["image"] == [32, 32]
        assert all(row[a] == sample[a] for a in params.build_target().space.names)


def test_croissant_records_the_hash_of_every_file(published):
    """mlcroissant does not check hashes: here they are checked against the files."""
    from fairsynth.data.shards import sha256_file

    _, report, _ = published
    meta = json.loads((report / "croissant.json").read_text())
    for f in meta["distribution"]:
        if f["@type"] == "cr:FileObject":
            assert sha256_file(report / f["contentUrl"]) == f["sha256"], f["contentUrl"]


def test_same_inputs_same_publication_bytes(published):
    """A run made again from the same params: the card is the same bytes; the Croissant file
    differs at most in ``datePublished`` and the page only inside its run-timing section (both
    from the run record, the day and the wall times of the run that generated the shards)."""
    params, report, _ = published
    names = ("README.md", "croissant.json", "report.html")
    before = {n: (report / n).read_bytes() for n in names}
    stage_generate(params, None, progress=False, force=True)
    audit = json.loads((report.parent / "audit" / "audit.json").read_text())
    stage_report(params, audit, report)
    after = {n: (report / n).read_bytes() for n in names}
    assert after["README.md"] == before["README.md"]
    dated = [json.loads(before["croissant.json"]), json.loads(after["croissant.json"])]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d", d.pop("datePublished")) for d in dated)
    assert dated[0] == dated[1]
    timing = re.compile(rb"<section id=run-timing>.*?</section>", re.S)
    assert timing.search(after["report.html"]), "the page has no run-timing section"
    assert timing.sub(b"", after["report.html"]) == timing.sub(b"", before["report.html"])


def test_card_size_categories():
    assert [size_category(n) for n in (0, 999, 1000, 99_999, 5_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]  # fmt: skip


def test_card_config_errors_name_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("card: {name: '  '}\n")
    with pytest.raises(ConfigError, match=r"card\.name"):
        load_params(p)
    p.write_text("card: {licence: mit}\n")
    with pytest.raises(ConfigError, match=r"card\.licence"):
        load_params(p)


def test_page_is_self_contained(published):
    _, report, acc = published
    page = (report / "report.html").read_text()
    assert "<script" not in page
    # nothing fetched: images inline, no external stylesheet or link
    for attr in ("src=", "href="):
        for chunk in page.split(attr)[1:]:
            value = chunk[1:].split(chunk[0], 1)[0] if chunk[0] in "'\"" else chunk.split()[0]
            assert value.startswith("data:"), value[:60]
    for needle in ("Before, target, after", "Samples per cell", "Cost", "Verifiers", "Timing",
                   "Provenance", "generated per accepted"):  # fmt: skip
        assert needle in page, needle
    assert page.count("<figure class=cell>") == acc["cell"].nunique()


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (make test installs "
                    "Debian's chromium where it can): the page was not rendered")  # fmt: skip
def test_page_renders_in_headless_chromium(published, tmp_path):
    _, report, _ = published
    shot = tmp_path / "page.png"
    run = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'chromium'}", "--enable-logging=stderr",
         "--v=0", "--window-size=1200,1600",
         f"--screenshot={shot}", (report / "report.html").resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # the page has no script: any console message is an error
    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (1600, 1200)
    assert image.std() > 20 and (image < 128).mean() > 0.01  # text, plots and samples: not blank
