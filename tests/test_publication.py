"""What a published dataset says about itself: the dataset card
(read back by ``datasets``) and the report page (rendered by headless Chromium)."""

import shutil
import subprocess

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
        "guidance: {mode: distribution, strength: 1.0, batch_size: 3}\n"
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
