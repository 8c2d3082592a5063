import json

import numpy as np
import pandas as pd
import webdataset as wds

from fairsynth.app.config import load_params, replace
from fairsynth.app.stages.audit import stage_audit
from fairsynth.app.stages.generate import stage_generate
from fairsynth.app.stages.reference import stage_reference
from fairsynth.app.stages.report import stage_report
from tests.factories import Crash, tiny_params


def test_pipeline_end_to_end_tiny(tmp_path, tiny_world):
    tiny_params(tmp_path, tiny_world)
    p = tmp_path / "params.yaml"  # a target this random tiny world can fill: the run completes
    p.write_text(p.read_text().replace("{light: 0.5, dark: 0.5}", "{light: 1.0, dark: 0.0}"))
    params = load_params(p)
    stage_reference(params)
    audit = stage_audit(params, tmp_path / "audit")
    assert sum(audit["counts"]) == 60 and (tmp_path / "audit" / "reference_vs_target.png").is_file()
    summary = stage_generate(params, audit, progress=False)
    out = tmp_path / "out"
    frame = pd.read_parquet(out / "manifest.parquet")
    assert len(frame) == summary["generated"] <= 12 + 2
    acc = frame[frame["accepted"]]
    assert summary["accepted"] == [int((acc["cell"] == c).sum()) for c in ("light", "dark")]
    assert summary["complete"] and summary["quotas"] == summary["accepted"] == [4, 0]
    assert summary["shortfall"] == {}
    assert set(frame["reason"]) <= {"accepted", "cell_full"}
    assert (frame["reason"] == "accepted").sum() == 4
    # shards: plain webdataset sees exactly the accepted samples
    ds = wds.WebDataset(
        sorted(str(p) for p in out.glob("fairsynth-*.tar")), shardshuffle=False, empty_check=False
    )
    seen = list(ds.decode("rgb8"))
    assert sorted(s["__key__"] for s in seen) == sorted(acc["key"])
    assert all("." not in s["__key__"] for s in seen)
    index = json.loads((out / "index.json").read_text())
    assert sum(e["samples"] for e in index["shards"]) == len(acc)
    metrics = stage_report(params, audit, tmp_path / "report")
    assert metrics["samples_generated"] == summary["generated"]
    assert (tmp_path / "report" / "metrics.json").is_file()
    assert (tmp_path / "report" / "distribution.png").is_file()


def test_same_params_same_bytes(tmp_path, tiny_world):
    params = tiny_params(tmp_path, tiny_world, mode="sample")
    stage_generate(params, None, progress=False)
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")}
    manifest1 = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    stage_generate(params, None, progress=False, force=True)  # made again, not skipped
    second = {p.name: p.read_bytes() for p in (tmp_path / "out").glob("*.tar")}
    assert first and first == second
    pd.testing.assert_frame_equal(manifest1, pd.read_parquet(tmp_path / "out" / "manifest.parquet"))
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_an_up_to_date_output_is_left_alone(tmp_path, tiny_world, capsys):
    params = tiny_params(tmp_path, tiny_world, mode="sample")
    first = stage_generate(params, None, progress=False)
    out = tmp_path / "out"
    files = sorted(p for p in out.rglob("*") if p.is_file())
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = stage_generate(params, None, progress=False)
    assert again["up_to_date"] and "up to date" in capsys.readouterr().err
    assert again["accepted"] == first["accepted"] and again["generated"] == first["generated"]
    assert {p: p.stat().st_mtime_ns for p in files} == stamps, "an up-to-date run wrote"
    assert sorted(p for p in out.rglob("*") if p.is_file()) == files
    # a damaged shard or other inputs: generated again
    shard = next(out.glob("*.tar"))
    good = shard.read_bytes()
    shard.write_bytes(good[:-1] + b"x")
    assert "up_to_date" not in stage_generate(params, None, progress=False)
    assert shard.read_bytes() == good
    other = replace(params, generate=replace(params.generate, seed=params.generate.seed + 1))
    assert "up_to_date" not in stage_generate(other, None, progress=False)


def test_budget_caps_the_samples_generated(tmp_path, tiny_world):
    # 40 wanted, budget 10, batches of 3: the fourth batch shrinks to 1 instead of overshooting
    gen = "{mode: standalone, n: 40, budget: 10, seed: 3, accept_partial: true}"
    params = tiny_params(tmp_path, tiny_world, gen=gen)
    summary = stage_generate(params, None, progress=False)
    assert summary["generated"] == 10 and not summary["complete"]
    assert len(pd.read_parquet(tmp_path / "out" / "manifest.parquet")) == 10


def test_a_budget_below_the_quotas_is_refused_before_anything_runs(tmp_path, tiny_world):
    import pytest

    from fairsynth.app.config import ConfigError

    gen = "{mode: standalone, n: 40, budget: 10, seed: 3}"
    with pytest.raises(ConfigError, match="generate.budget: 10 is below the 40 samples"):
        tiny_params(tmp_path, tiny_world, gen=gen)


def test_augment_budget_below_the_deficit_is_refused_once_the_audit_says_it(tmp_path, tiny_world):
    import pytest

    params = tiny_params(tmp_path, tiny_world, gen="{mode: augment, budget: 3, seed: 3}")
    stage_reference(params)
    audit = stage_audit(params, tmp_path / "audit")  # 60 samples far from 50/50: a deficit > 3
    with pytest.raises(ValueError, match="generate.budget: 3 is below the"):
        stage_generate(params, audit, progress=False)
    assert not (tmp_path / "out").exists()  # refused before anything was generated


def test_an_incomplete_run_fails_its_command_naming_the_shortfall(tmp_path, tiny_world, capsys):
    """All dark, which this tiny world does not draw: the budget runs out. The command exits 1
    with the shortfall and the reasons; accepting a partial set makes it succeed, and the card
    then says the set is partial."""
    from fairsynth.app.stages.generate import main
    from fairsynth.data.card import _partial

    tiny_params(
        tmp_path, tiny_world, mode="none", gen="{mode: standalone, n: 4, budget: 6, seed: 3}"
    )
    p = tmp_path / "params.yaml"
    p.write_text(p.read_text().replace("{light: 0.5, dark: 0.5}", "{light: 0.0, dark: 1.0}"))
    assert main(["--params", str(p)]) == 1
    err = capsys.readouterr().err
    assert "the dataset is incomplete" in err and "short by cell: dark" in err
    assert "cell_full" in err and "generate.accept_partial" in err
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["complete"] is False and index["generated"] == 6
    p.write_text(p.read_text().replace("seed: 3}", "seed: 3, accept_partial: true}"))
    assert main(["--params", str(p)]) == 0
    facts = {"complete": False, "shortfall": {"dark": 3}}
    assert "This set is partial" in _partial(facts) and "dark: 3" in _partial(facts)
    assert _partial({**facts, "complete": True}) == ""


def test_augment_needs_audit(tmp_path, tiny_world):
    params = tiny_params(tmp_path, tiny_world, gen="{mode: augment, budget: 3}")
    import pytest

    with pytest.raises(ValueError, match="audit"):
        stage_generate(params, None, progress=False)
    _ = np


def test_crash_then_resume_gives_the_uninterrupted_result(tmp_path, tiny_world):
    gen = "{mode: standalone, n: 6, budget: 18, seed: 5}"
    params = tiny_params(tmp_path, tiny_world, mode="sample", gen=gen)
    whole = stage_generate(params, None, progress=False)
    assert whole["batches"] >= 3
    out = tmp_path / "out"
    expected = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert not list(tmp_path.glob("out.ledger/*")), "a complete run removes its ledger"

    def crash_after_two(state):
        if state.next_batch == 2:
            raise Crash

    import pytest

    # the same params into a new output folder: killed after two batches, then run again
    out = tmp_path / "again"
    params = replace(params, output=replace(params.output, dir=str(out)))
    with pytest.raises(Crash):
        stage_generate(params, None, progress=False, on_batch=crash_after_two)
    assert not (out / "index.json").exists(), "a crashed run must not look complete"
    assert not (tmp_path / "again.lock").exists()
    resumed = stage_generate(params, None, progress=False)
    assert resumed["resumed_at_batch"] == 2
    assert resumed["accepted"] == whole["accepted"]
    assert resumed["generated"] == whole["generated"]
    assert {p.name: p.read_bytes() for p in out.glob("*.tar")} == expected
    pd.testing.assert_frame_equal(manifest, pd.read_parquet(out / "manifest.parquet"))


def test_a_run_that_starts_over_and_dies_leaves_the_published_output_to_come_back(tmp_path,
                                                                                   tiny_world):  # fmt: skip
    params = tiny_params(
        tmp_path, tiny_world, mode="sample", gen="{mode: standalone, n: 6, seed: 5}"
    )
    first = stage_generate(params, None, progress=False)
    out = tmp_path / "out"
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def crash(state):
        raise Crash

    import pytest

    other = replace(params, generate=replace(params.generate, seed=6))  # a change, started ...
    with pytest.raises(Crash):
        stage_generate(other, None, progress=False, on_batch=crash)  # ... and killed
    assert not (out / "index.json").exists()
    again = stage_generate(params, None, progress=False)  # the change taken back
    assert again["up_to_date"] and again["fingerprint"] == first["fingerprint"]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


def test_a_ledger_left_beside_a_complete_output_is_removed(tmp_path, tiny_world):
    """Killed after publishing, before removing its ledger: the next run finds the output up
    to date and removes the ledger (it also comes back from versions/ without index.json)."""
    from fairsynth.run.ledger import ledger_dir

    params = tiny_params(tmp_path, tiny_world, mode="sample")
    first = stage_generate(params, None, progress=False)
    out = tmp_path / "out"
    left = ledger_dir(out, first["fingerprint"])
    left.mkdir(parents=True)
    (left / "batch-000000.tar").write_bytes(b"a batch of the finished run")
    (out / "index.json").unlink()  # killed between versions/ and index.json, too
    again = stage_generate(params, None, progress=False)
    assert again["up_to_date"] and (out / "index.json").is_file()
    assert not left.exists() and not left.parent.exists()


def test_one_writer_per_output(tmp_path, tiny_world):
    import socket
    import subprocess
    import sys

    import pytest

    params = tiny_params(tmp_path, tiny_world, mode="none")
    lock = tmp_path / "out.lock"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"pid": live.pid, "host": socket.gethostname()}))
        with pytest.raises(RuntimeError, match=f"pid {live.pid}"):
            stage_generate(params, None, progress=False)
        assert not (tmp_path / "out" / "index.json").exists()
    finally:
        live.kill()
        live.wait()
    # the holder is dead now: its lock is stale and taken over
    stage_generate(params, None, progress=False)
    assert (tmp_path / "out" / "index.json").exists() and not lock.exists()


def test_train_adp_reuses_a_saved_recording(tmp_path, tiny_world):
    import torch

    from fairsynth.app.train_adp import train_adp_from_params
    from fairsynth.guidance.adp import TrainedADP

    p = tmp_path / "params.yaml"
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        "adp: {pseudo_labeller: 'tests.labellers:cycling', trajectories: 8, epochs: 1, dropout: 0.1, lr: 0.0005}\n"
        "guidance: {loss: chi2, strength: 1.0, shift: 0, batch_size: 4}\n"
    )
    params = load_params(p)
    rec = tmp_path / "traj.safetensors"
    killed = tmp_path / ".c-trajectories-killed"  # scratch a SIGKILLed recording left behind
    killed.mkdir()
    train_adp_from_params(params, tmp_path / "c")
    assert not killed.exists() and not list(tmp_path.glob(".c-*")), "scratch cleaned up"
    first = train_adp_from_params(params, tmp_path / "a", trajectories_file=rec)
    stamp = rec.stat().st_mtime_ns
    train_adp_from_params(params, tmp_path / "b", trajectories_file=rec)
    assert rec.stat().st_mtime_ns == stamp, "the recording is reused, not re-recorded"
    assert first.meta["dropout"] == 0.1 and first.meta["lr"] == 0.0005
    a, b = TrainedADP.load(tmp_path / "a"), TrainedADP.load(tmp_path / "b")
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k])


def test_means_only_adds_class_means_to_an_adp_and_keeps_its_weights(tmp_path, tiny_world):
    import torch

    from fairsynth.app.train_adp import train_adp_from_params
    from fairsynth.guidance.adp import MEANS_FILE, TrainedADP

    p = tmp_path / "params.yaml"
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        "adp: {pseudo_labeller: 'tests.labellers:cycling', trajectories: 8, epochs: 1}\nguidance: {loss: chi2, strength: 1.0, shift: 0, batch_size: 4}\n"
    )
    params = load_params(p)
    train_adp_from_params(params, tmp_path / "adp")
    (tmp_path / "adp" / MEANS_FILE).unlink()  # an ADP trained before class means existed
    before = TrainedADP.load(tmp_path / "adp")
    assert before.means is None
    train_adp_from_params(params, tmp_path / "adp", means_only=True)
    after = TrainedADP.load(tmp_path / "adp")
    assert after.means is not None and after.meta["class_means_trajectories"] == 8
    assert int(after.means.counts.sum()) == 8
    assert after.meta["val_loss_history"] == before.meta["val_loss_history"]
    for k, v in before.model.state_dict().items():
        assert torch.equal(v, after.model.state_dict()[k])


def test_the_adp_stage_skips_a_folder_trained_from_the_same_inputs(tmp_path, tiny_world, capsys):
    from fairsynth.app.stages.train_adp import stage_train_adp

    p = tmp_path / "params.yaml"
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        "adp: {pseudo_labeller: 'tests.labellers:cycling', trajectories: 8, epochs: 1}\nguidance: {loss: chi2, strength: 1.0, shift: 0, batch_size: 4}\n"
    )
    params = load_params(p)
    out = tmp_path / "adp_out"
    stage_train_adp(params, out)
    stamps = {f: f.stat().st_mtime_ns for f in out.iterdir()}
    stage_train_adp(params, out)
    assert "up to date" in capsys.readouterr().err
    assert {f: f.stat().st_mtime_ns for f in out.iterdir()} == stamps
    other = replace(params, adp=replace(params.adp, lr=params.adp.lr * 2))
    stage_train_adp(other, out)
    assert {f: f.stat().st_mtime_ns for f in out.iterdir()} != stamps  # other inputs: trained


def test_a_rendered_reference_is_not_rendered_again(tmp_path, tiny_world, capsys):
    params = tiny_params(tmp_path, tiny_world)
    stage_reference(params)
    ref = tmp_path / "ref"
    stamps = {p: p.stat().st_mtime_ns for p in ref.iterdir()}
    stage_reference(params)
    assert "up to date" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in ref.iterdir()} == stamps
    labels = ref / "labels.parquet"
    labels.write_bytes(b"damaged")
    stage_reference(params)  # a damaged file: rendered again
    assert labels.read_bytes() != b"damaged"
    more = replace(params, reference=replace(params.reference, n=params.reference.n + 1))
    stage_reference(more)
    assert len(pd.read_parquet(labels)) == params.reference.n + 1


def _adp_params(tmp_path, labeller: str, extra: str = ""):
    p = tmp_path / "params.yaml"
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        f"adp: {{pseudo_labeller: 'tests.labellers:{labeller}', trajectories: 8, epochs: 1{extra}}}\n"
        "attributes: {skin: [light, dark], eyeglasses: ['no', 'yes']}\n"
        "guidance: {batch_size: 4}\n"
    )
    return load_params(p)


def test_train_adp_never_learns_from_what_the_pseudo_labeller_rejected(tmp_path, tiny_world):
    """A pseudo-labeller that rejects a quarter of the images: above adp.max_rejected the run
    stops naming the reasons; allowed, the rejected images are left out, not taught as class 0."""
    import pytest

    from fairsynth.app.train_adp import train_adp_from_params

    with pytest.raises(ValueError, match=r"rejected 2 of 8 recorded images \(no_face 2\)"):
        train_adp_from_params(_adp_params(tmp_path, "rejecting"), tmp_path / "a")
    assert not (tmp_path / "a").exists()
    allowed = _adp_params(tmp_path, "rejecting", ", max_rejected: 0.3")
    trained = train_adp_from_params(allowed, tmp_path / "b")
    assert trained.meta["trajectories"] == 6  # the 2 rejected are not among them
    assert trained.meta["label_fractions"]["skin"] == [4, 2]  # samples 0, 1, 2 of each batch


def test_train_adp_stops_when_a_class_gets_no_label(tmp_path, tiny_world):
    import pytest

    from fairsynth.app.train_adp import train_adp_from_params

    with pytest.raises(ValueError, match=r"labelled no recorded image skin=\['dark'\] \(of 8\)"):
        train_adp_from_params(_adp_params(tmp_path, "constant"), tmp_path / "a")


def test_train_adp_writes_where_adp_path_says(tmp_path, tiny_world):
    import pytest

    from fairsynth.app.stages.train_adp import stage_train_adp

    params = _adp_params(tmp_path, "cycling")
    with pytest.raises(ValueError, match="adp.path: 'toyfaces' is a shipped ADP"):
        stage_train_adp(params)  # the default adp.path names the shipped one
    ours = replace(params, adp=replace(params.adp, path=str(tmp_path / "mine")))
    assert stage_train_adp(ours) == str(tmp_path / "mine")
    assert (tmp_path / "mine" / "adp.safetensors").is_file()


def test_the_preflight_stops_a_model_the_verifier_cannot_judge(tmp_path, tiny_world):
    """Before anything is loaded: a diffusers export without fairsynth's pixel-unshuffle record
    makes 16x16 images with 12 channels; a verifier for 64x64 images would reject every 32x32
    sample. Each is one line naming both sides, and nothing is generated."""
    import shutil

    import pytest

    from fairsynth.core.plugins import resolve

    params = tiny_params(tmp_path, tiny_world)
    (tmp_path / "model" / "fairsynth.json").unlink()
    with pytest.raises(ValueError, match=r"makes 16x16 images with 12 channels; the classifi"):
        stage_generate(params, None, progress=False)
    assert not (tmp_path / "out").exists()
    tiny_world[0].joinpath("fairsynth.json").write_text('{"pixel_unshuffle": 2}')
    big = tmp_path / "verifier64"
    shutil.copytree(resolve("verifier", "toyfaces"), big)
    config = json.loads((big / "config.json").read_text())
    (big / "config.json").write_text(json.dumps({**config, "image_size": 64}))
    other = replace(params, verify=replace(params.verify, verifier=str(big)))
    with pytest.raises(
        ValueError, match=r"32x32 images .* verify.verifier .*verifier64 takes 64x64"
    ):
        stage_generate(other, None, progress=False)
    assert not (tmp_path / "out").exists()


def test_an_audit_made_for_other_params_is_refused(tmp_path, tiny_world, monkeypatch, capsys):
    """Two params files share the default audit folder: the second one's generate and report
    stages refuse the first one's audit instead of computing quotas from its counts."""
    import pytest

    from fairsynth.app.stages.common import read_audit
    from fairsynth.app.stages.generate import main
    from fairsynth.app.stages.reference import reference_content_id

    monkeypatch.chdir(tmp_path)
    params = tiny_params(tmp_path, tiny_world)
    stage_reference(params)
    made = stage_audit(params)  # into output.audit_dir (data/audit here)
    assert read_audit(params, reference_content_id(params))["counts"] == made["counts"]
    p = tmp_path / "params.yaml"
    p.write_text(p.read_text().replace("{light: 0.5, dark: 0.5}", "{light: 0.3, dark: 0.7}"))
    with pytest.raises(ValueError, match=r"audit.json: this audit was made for another refer"):
        read_audit(load_params(p))
    assert main(["--params", str(p)]) == 2
    assert "this audit was made for another reference or target" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
