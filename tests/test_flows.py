"""Flows under one Prefect test harness per session (a temporary local server)."""

import json
from pathlib import Path

import pytest

from fairsynth.app.config import replace
from tests.test_pipeline import _setup


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_balance_flow_tiny(tmp_path, tiny_world, harness, monkeypatch):
    from flows.balance import balance

    _setup(tmp_path, tiny_world)
    monkeypatch.chdir(tmp_path)
    metrics = balance(str(tmp_path / "params.yaml"))
    # the report against what the flow's generation published (the manifest), counted here
    import numpy as np
    import pandas as pd

    frame = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    accepted = frame[frame["accepted"]]
    counts = [int((accepted["cell"] == c).sum()) for c in ("light", "dark")]
    assert metrics["counts_synthetic"] == counts and metrics["samples_generated"] == len(frame)
    after = np.array(counts) / max(1, sum(counts))
    assert metrics["fd_after"] == pytest.approx(float(np.sqrt(((after - 0.5) ** 2).sum())))
    audit = json.loads((tmp_path / "data" / "audit" / "audit.json").read_text())
    ref = pd.read_parquet(tmp_path / "ref" / "labels.parquet")
    assert audit["counts"] == [int((ref["skin"] == c).sum()) for c in ("light", "dark")]


@pytest.mark.slow
def test_toyfaces_audit_flow(tmp_path, harness):
    from flows.toyfaces_audit import toyfaces_audit

    params = tmp_path / "params.yaml"
    params.write_text(
        f"reference: {{path: {tmp_path / 'ref'}, n: 40, seed: 2}}\n"
        "audit_model: {n: 6, seed: 0, steps: 2, batch_size: 3}\n"
    )
    summary = toyfaces_audit(str(params), str(tmp_path / "audit"))
    assert set(summary) == {"max_abs_diff", "confident_fraction"}
    report = json.loads((tmp_path / "audit" / "model_audit.json").read_text())
    assert report["n"] == 6 and report["reference_source"].endswith("labels.parquet")


def test_scheduled_deployment_builds():
    from flows.balance import balance

    dep = balance.to_deployment(
        name="balance-scheduled", cron="0 3 * * *", parameters={"params_file": "params.yaml"}
    )
    assert dep.name == "balance-scheduled"
    assert dep.schedules and dep.schedules[0].schedule.cron == "0 3 * * *"


@pytest.mark.slow
def test_adp_task_cached_on_its_inputs_and_rerun_when_its_folder_is_gone(
    tmp_path, tiny_world, harness, monkeypatch
):
    import shutil

    from prefect import flow

    import tasks.pipeline as tp
    from fairsynth.app.config import TargetConfig

    trained = []

    def train(params, out, progress=False):  # stands in for the real training (seconds)
        from fairsynth.app.train_adp import adp_inputs_hash

        trained.append(params.adp.lr)
        shutil.copytree(tiny_world[1], out, dirs_exist_ok=True)
        meta = json.loads((Path(out) / "adp.json").read_text())
        meta["inputs_fingerprint"] = adp_inputs_hash(params)  # as train_adp_from_params does
        (Path(out) / "adp.json").write_text(json.dumps(meta))
        return str(out)

    monkeypatch.setattr(tp, "stage_train_adp", train)

    @flow
    def adp_only(params, out: str) -> str:
        return tp.train_adp_cached(params, out)

    params = _setup(tmp_path, tiny_world)
    out = str(tmp_path / "adp_out")  # a new path per test run: no hit from an earlier run
    assert adp_only(params, out) == out and len(trained) == 1
    other = replace(
        params,
        target=TargetConfig(marginals={"skin": {"light": 0.2, "dark": 0.8}}),
        generate=replace(params.generate, n=40),
    )
    adp_only(other, out)
    assert len(trained) == 1, "a new target or generate.n retrained the ADP"
    shutil.rmtree(out)
    assert adp_only(other, out) == out and len(trained) == 2, "a cached path to nothing"
    assert (tmp_path / "adp_out" / "adp.safetensors").is_file()
    other_lr = replace(params, adp=replace(params.adp, lr=1e-3))
    adp_only(other_lr, out)
    assert len(trained) == 3
    # A, then B into the same folder, then A again: A's cache entry names a folder that now
    # holds B's ADP, so A trains again
    adp_only(params, out)
    assert trained == [params.adp.lr, params.adp.lr, 1e-3, params.adp.lr]
    adp_only(params, out)
    assert len(trained) == 4  # and now it holds A's: a hit
