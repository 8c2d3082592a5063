"""Flows under one Prefect test harness per session (a temporary local server)."""

import json
from pathlib import Path

import pytest

from fairsynth.app.config import replace
from tests.factories import tiny_params


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
def test_balance_flow_tiny(tmp_path, tiny_world, harness, monkeypatch):
    from flows.balance import balance

    tiny_params(tmp_path, tiny_world)
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
def test_a_flow_whose_dataset_is_incomplete_fails_naming_the_shortfall(tmp_path, tiny_world,
                                                                      harness, monkeypatch):  # fmt: skip
    from fairsynth.app.errors import StageFailed
    from flows.balance import balance

    tiny_params(tmp_path, tiny_world, gen="{mode: standalone, n: 4, budget: 12, seed: 3}")
    p = tmp_path / "params.yaml"  # all dark: this random tiny world draws too few
    p.write_text(p.read_text().replace("{light: 0.5, dark: 0.5}", "{light: 0.0, dark: 1.0}"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageFailed, match=r"stage generate: the dataset is incomplete.*dark"):
        balance(str(p))
    assert not (tmp_path / "data" / "report" / "metrics.json").exists()  # no report of it


@pytest.mark.slow
def test_balance_flow_again_with_nothing_changed_writes_nothing(tmp_path, tiny_world, harness,
                                                                 monkeypatch):  # fmt: skip
    from flows.balance import balance

    tiny_params(tmp_path, tiny_world)
    monkeypatch.chdir(tmp_path)
    first = balance(str(tmp_path / "params.yaml"))
    written = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()
               and ".prefect" not in p.parts and "cache" not in p.parts}  # fmt: skip
    assert any(p.suffix == ".tar" for p in written)
    again = balance(str(tmp_path / "params.yaml"))
    assert again == first
    changed = [p for p, t in written.items() if p.stat().st_mtime_ns != t]
    # the reference is rendered again to the same bytes; nothing downstream of it is written
    assert not [p for p in changed if "ref" not in p.relative_to(tmp_path).parts], changed


@pytest.mark.slow
def test_a_second_balance_run_stops_at_once_on_a_held_output(tmp_path, tiny_world, harness,
                                                              monkeypatch):  # fmt: skip
    import socket
    import subprocess
    import sys

    from fairsynth.app.errors import StageFailed
    from fairsynth.run.lock import OutputBusy
    from flows.balance import balance

    tiny_params(tmp_path, tiny_world)
    monkeypatch.chdir(tmp_path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "report.lock").write_text(
            json.dumps({"pid": live.pid, "host": socket.gethostname()})
        )
        with pytest.raises(StageFailed, match=f"report.lock: another run \\(pid {live.pid}") as e:
            balance(str(tmp_path / "params.yaml"))
        assert isinstance(e.value.cause, OutputBusy) and e.value.stage == "output locks"
    finally:
        live.kill()
        live.wait()
    assert not (tmp_path / "ref").exists() and not (tmp_path / "out").exists()
    assert not (tmp_path / "data" / "audit").exists(), "it wrote before it stopped"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["report.lock"]


@pytest.mark.slow
def test_a_failed_run_names_the_stage_and_file_and_keeps_the_last_report(
    tmp_path, tiny_world, harness, monkeypatch
):
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from fairsynth.app.errors import StageFailed
    from flows.balance import balance

    tiny_params(tmp_path, tiny_world)
    monkeypatch.chdir(tmp_path)
    balance(str(tmp_path / "params.yaml"))  # a good run publishes a report
    params = tmp_path / "params.yaml"  # the rendered reference, now read as the user's shards
    params.write_text(params.read_text().replace("reference: {", "reference: {source: shards, "))
    shard = next((tmp_path / "ref").glob("*.tar"))
    shard.write_bytes(b"not a tar")  # ... and damaged before the next tick
    state = balance(str(tmp_path / "params.yaml"), return_state=True)
    assert state.is_failed()
    assert "stage audit" in state.message and shard.name in state.message, state.message
    with pytest.raises(StageFailed, match="stage audit"):
        state.result()

    async def latest_report() -> str:
        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["balance-report"])),
                sort="CREATED_DESC", limit=1,
            )  # fmt: skip
            return found[0].data

    report = asyncio.run(latest_report())
    assert report.startswith("**Run failed**") and "stage audit" in report
    assert "Last published report" in report and "| light |" in report


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


def test_scheduled_deployment_runs_one_at_a_time():
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.balance import deployment

    dep = deployment("params.yaml", cron="0 3 * * *")
    assert dep.name == "balance-scheduled" and dep.parameters == {"params_file": "params.yaml"}
    assert dep.schedules and dep.schedules[0].schedule.cron == "0 3 * * *"
    assert dep.concurrency_limit == 1
    assert dep.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
    every = deployment("params.yaml", every=90)
    assert every.schedules[0].schedule.interval.total_seconds() == 90


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

    params = tiny_params(tmp_path, tiny_world)
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
