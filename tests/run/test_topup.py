"""Top-up over a growing reference (augment mode): only the new deficit is generated, added as
new shards after the published ones, which stay byte for byte; each publication a version."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from fairsynth.app.config import load_params
from fairsynth.app.stages.audit import stage_audit
from fairsynth.app.stages.generate import stage_generate
from fairsynth.core.quotas import augment_quotas
from fairsynth.data.feed import Feed
from fairsynth.toyfaces.dataset import build_reference

SKIN_HALF = {"skin": (0.5, 0.5), "eyeglasses": (0.85, 0.15), "hair": (0.6, 0.3, 0.1)}


def _reference_part(folder, n, seed, index):
    """``n`` renders as one shard ``reference-<index>.tar`` of ``folder``, labels in its json."""
    tmp = folder.parent / f"part{seed}"
    build_reference(tmp, n=n, seed=seed, bias=SKIN_HALF, shard_size=n)
    folder.mkdir(exist_ok=True)
    shutil.move(tmp / "reference-000000.tar", folder / f"reference-{index:06d}.tar")
    shutil.rmtree(tmp)


def _params(tmp_path, tiny_world, target="{light: 0.8, dark: 0.2}"):
    # the random tiny model draws light skin: a target whose dark quota the reference fills
    p = tmp_path / "params.yaml"
    p.write_text(
        f"reference: {{source: shards, path: {tmp_path / 'ref'}}}\n"
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        f"target: {{marginals: {{skin: {target}}}}}\n"
        "guidance: {mode: distribution, loss: chi2, strength: 1.0, shift: 0, batch_size: 4}\n"
        "verify: {confidence: 0.0, audit_n: 0}\n"
        "generate: {mode: augment, budget: 400, seed: 3}\n"
        f"output: {{dir: {tmp_path / 'out'}, shard_size: 3}}\n"
    )
    return load_params(p)


def _run(params, tmp_path):
    audit = stage_audit(params, tmp_path / "audit")
    return audit, stage_generate(params, audit, progress=False)


def _union(audit, out):
    frame = pd.read_parquet(out / "manifest.parquet")
    acc = frame[frame["accepted"]]
    synth = np.array([(acc["cell"] == c).sum() for c in audit["cells"]])
    return np.asarray(audit["counts"]) + synth, frame


def _published_then_grown(tmp_path, tiny_world):
    """Version 1 published over 12 references; then 12 more of the same bias arrive."""
    _reference_part(tmp_path / "ref", 12, seed=1, index=0)
    params = _params(tmp_path, tiny_world)
    _, first = _run(params, tmp_path)
    out = tmp_path / "out"
    v1 = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    _reference_part(tmp_path / "ref", 12, seed=2, index=1)
    return params, first, out, v1


def test_a_grown_reference_is_topped_up_and_the_published_shards_kept(tmp_path, tiny_world, capsys):
    _reference_part(tmp_path / "ref", 12, seed=1, index=0)
    params = _params(tmp_path, tiny_world)
    audit1, first = _run(params, tmp_path)
    out = tmp_path / "out"
    assert first["complete"] and first["version"] == 1 and "parent" not in first
    v1 = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    v1_keys = set(pd.read_parquet(out / "manifest.parquet")["key"])

    _reference_part(tmp_path / "ref", 12, seed=2, index=1)  # new data, the same bias
    audit2, second = _run(params, tmp_path)
    assert audit2["reference_id"] != audit1["reference_id"]
    assert "topping it up" in capsys.readouterr().err
    fresh = augment_quotas(np.array([0.8, 0.2]), np.asarray(audit2["counts"]))
    # only what the new reference adds to the deficit was generated and added
    added = np.asarray(second["changes"]["added"])
    assert (added == fresh - np.asarray(first["accepted"])).all() and added.sum() > 0
    assert second["quotas"] == second["accepted"] == fresh.tolist()
    assert second["version"] == 2 and second["parent"] == first["fingerprint"]
    assert second["changes"]["reference_counts"] == {
        "from": audit1["counts"], "to": audit2["counts"]
    }  # fmt: skip
    assert second["generated"] == first["generated"] + second["changes"]["generated"]
    # every earlier shard byte for byte; new shards numbered after them
    now = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert {k: now[k] for k in v1} == v1 and len(now) > len(v1)
    assert [e["shard"] for e in second["shards"]] == sorted(now)
    union, frame = _union(audit2, out)
    assert (union == (fresh + np.asarray(audit2["counts"]))).all()  # the union is on target
    assert v1_keys < set(frame["key"]) and frame["key"].is_unique
    # a version on disk per publication; the feed reads the latest or a named one
    v1_index = json.loads((out / "versions" / "v000001" / "index.json").read_text())
    assert v1_index["fingerprint"] == first["fingerprint"] and v1_index["version"] == 1
    assert json.loads((out / "index.json").read_text())["version"] == 2
    fed = lambda **kw: {s["__key__"] for s in Feed(out, shuffle=0, **kw)}  # noqa: E731
    accepted_v1 = set(frame.loc[frame["accepted"] & frame["key"].isin(v1_keys), "key"])
    assert fed(version=1) == accepted_v1
    assert fed() == set(frame.loc[frame["accepted"], "key"]) > accepted_v1
    with pytest.raises(FileNotFoundError, match="version 7.*v000001, v000002"):
        Feed(out, version=7)

    # nothing changed since: up to date, nothing written
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = stage_generate(params, audit2, progress=False)
    assert again["up_to_date"] and again["version"] == 2
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps


def test_a_top_up_killed_while_publishing_resumes_onto_its_parent(tmp_path, tiny_world):
    params, first, out, v1 = _published_then_grown(tmp_path, tiny_world)
    audit2, whole = _run(params, tmp_path)
    expected = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    manifest = pd.read_parquet(out / "manifest.parquet")

    # back to version 1 as published, with a dead top-up's debris: a new shard and manifest
    for name in set(expected) - set(v1):
        (out / name).unlink()
    (out / "index.json").write_bytes((out / "versions/v000001/index.json").read_bytes())
    shutil.rmtree(out / "versions/v000002")
    (out / f"fairsynth-{len(v1):06d}.tar").write_bytes(b"half a shard")
    (out / "manifest.parquet").write_bytes(b"not the parent's manifest")
    resumed = stage_generate(params, audit2, progress=False)
    assert resumed["version"] == 2 and resumed["accepted"] == whole["accepted"]
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == expected
    pd.testing.assert_frame_equal(manifest, pd.read_parquet(out / "manifest.parquet"))


def test_fewer_needed_than_published_keeps_all_and_rebalances(tmp_path, tiny_world):
    _reference_part(tmp_path / "ref", 12, seed=1, index=0)
    params = _params(tmp_path, tiny_world)
    _, first = _run(params, tmp_path)
    # new reference data that is all light skin: a fresh run would need fewer light samples
    tmp = tmp_path / "light"
    build_reference(tmp, n=12, seed=4, bias={**SKIN_HALF, "skin": (1.0, 0.0)}, shard_size=12)
    shutil.move(tmp / "reference-000000.tar", tmp_path / "ref" / "reference-000001.tar")
    audit2, second = _run(params, tmp_path)
    fresh = np.asarray(second["changes"]["fresh_quotas"])
    published = np.asarray(first["accepted"])
    surplus = np.asarray(second["changes"]["surplus"])
    assert (surplus == np.maximum(published - fresh, 0)).all() and surplus.sum() > 0
    assert "keep-all" in second["changes"]["policy"]
    union, frame = _union(audit2, tmp_path / "out")
    # keep all: nothing published is withdrawn, and reference + synthetic follows the target
    assert set(pd.read_parquet(tmp_path / "out/versions/v000001/manifest.parquet")["key"]) <= set(
        frame["key"]
    )
    final = union / union.sum()
    assert abs(final[1] - 0.2) <= 1 / union.sum()


class Crash(Exception):
    pass


def test_a_top_up_killed_while_generating_resumes_to_the_same_bytes(tmp_path, tiny_world):
    params, first, out, v1 = _published_then_grown(tmp_path, tiny_world)
    audit2 = stage_audit(params, tmp_path / "audit")
    whole_dir = tmp_path / "whole"
    shutil.copytree(out, whole_dir)  # the same top-up, uninterrupted, on a copy
    from fairsynth.app.config import replace

    whole = stage_generate(replace(params, output=replace(params.output, dir=str(whole_dir))),
                           audit2, progress=False)  # fmt: skip
    assert whole["changes"]["generated"] > params.guidance.batch_size  # more than one batch

    def crash_after_one(state):
        if state.next_batch > first["batches"]:
            raise Crash

    with pytest.raises(Crash):
        stage_generate(params, audit2, progress=False, on_batch=crash_after_one)
    assert json.loads((out / "index.json").read_text())["version"] == 1  # still the parent
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == v1
    resumed = stage_generate(params, audit2, progress=False)
    assert resumed["resumed_at_batch"] == first["batches"] + 1
    assert resumed["accepted"] == whole["accepted"] and resumed["version"] == 2
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == {
        p.name: p.read_bytes() for p in whole_dir.glob("*.tar")
    }  # fmt: skip


def test_a_standalone_output_is_not_topped_up_by_an_augment_run(tmp_path, tiny_world):
    _reference_part(tmp_path / "ref", 12, seed=1, index=0)
    params = _params(tmp_path, tiny_world)
    from fairsynth.app.config import replace

    standalone = replace(params, generate=replace(params.generate, mode="standalone", n=4))
    audit = stage_audit(standalone, tmp_path / "audit")
    assert stage_generate(standalone, audit, progress=False)["version"] == 1
    augmented = stage_generate(params, audit, progress=False)
    assert augmented["version"] == 1 and "parent" not in augmented  # started over
    assert augmented["changes"] == {"kind": "new"}
