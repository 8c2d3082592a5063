"""The balance deployment served against a real Prefect server (``prefect server start`` on
loopback): the scheduler starts the runs, a run with nothing changed skips, runs never overlap."""

import pytest

from tests.factories import tiny_params


@pytest.mark.slow
def test_scheduled_runs_on_a_real_server_and_the_next_tick_skips(tmp_path, tiny_world):
    from tests.flow_watch import finished, local_server, overlaps, served, wait_for_runs

    tiny_params(tmp_path, tiny_world)
    log = tmp_path / "serve.log"
    with local_server(tmp_path / "prefect-server") as api:
        with served(tmp_path / "params.yaml", api, every=5, cwd=tmp_path, log=log):
            first = wait_for_runs(api, lambda rs: len(finished(rs)) >= 1, timeout=300)
            one = finished(first)[0]
            outputs = sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file())
            stamps = {p: p.stat().st_mtime_ns for p in outputs}
            runs = wait_for_runs(api, lambda rs: len(finished(rs)) >= 2, timeout=300)
    done = finished(runs)
    # started by the server's scheduler, not by hand; each ran to completion
    assert all(r["auto_scheduled"] for r in done), [r["name"] for r in done]
    assert [r["state_type"] for r in done[:2]] == ["COMPLETED", "COMPLETED"], done[:2]
    assert done[0]["id"] == one["id"]
    # the second tick found its output up to date: it generated nothing and wrote nothing
    text = log.read_text(errors="replace")
    assert "up to date (version 1" in text, text[-3000:]
    assert {p: p.stat().st_mtime_ns for p in outputs} == stamps
    assert sorted(p for p in (tmp_path / "out").rglob("*") if p.is_file()) == outputs
    assert overlaps(runs) == 0
