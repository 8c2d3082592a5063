"""Flows under one Prefect test harness per session (a temporary local server)."""

import json

import pytest

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
    assert metrics["samples_generated"] > 0 and "fd_after" in metrics
    assert (
        json.loads((tmp_path / "data" / "report" / "metrics.json").read_text())["fd_after"]
        == metrics["fd_after"]
    )
    assert (tmp_path / "data" / "audit" / "audit.json").is_file()


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
