"""A real Prefect server on loopback, the balance deployment served against it, and the runs
its scheduler started: what the real-server test and ``benchmarks/scheduled.py`` watch.

    with local_server(tmp / "prefect") as api:
        with served("params.yaml", api, every=10, log=tmp / "serve.log"):
            runs = wait_for_runs(api, lambda rs: len(finished(rs)) >= 2, timeout=300)

The server is ``prefect server start`` in its own process with its own ``PREFECT_HOME``
(SQLite), no UI and no analytics; its scheduler loop is shortened so that a deployment's
first scheduled runs exist within seconds of it being served.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx

DEPLOYMENT = "balance-scheduled"
ROOT = Path(__file__).resolve().parents[1]  # flows/ lives in the repository root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(home: Path, api: str | None = None) -> dict[str, str]:
    """This environment less its Prefect settings (another server's database, say), with
    ``home`` as PREFECT_HOME and ``api`` as PREFECT_API_URL."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    }
    if api:
        env["PREFECT_API_URL"] = api
    return env


@contextlib.contextmanager
def local_server(home: str | Path, timeout: float = 180) -> Iterator[str]:
    """``prefect server start`` on a free loopback port; yields its API URL once healthy, and
    stops it (and its children) on exit."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(port), "--no-ui", "--analytics-off"],
            env=server_env(home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({proc.returncode}): see {log.name}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"prefect server not healthy after {timeout:.0f} s: {log.name}")
            time.sleep(0.5)
        yield api
    finally:
        _stop(proc)


@contextlib.contextmanager
def served(
    params_file: str | Path,
    api: str,
    *,
    every: float | None = None,
    cron: str | None = None,
    cwd: str | Path = ".",
    log: str | Path,
) -> Iterator[subprocess.Popen]:
    """``python -m flows.balance PARAMS --serve-every/--serve`` against ``api``, in ``cwd``."""
    when = ["--serve-every", str(every)] if every is not None else ["--serve", str(cron)]
    home = Path(cwd) / ".prefect-serve"  # the serving process's own settings and result store
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.balance", str(params_file), *when],
            cwd=cwd, env=server_env(home, api), stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield proc
    finally:
        _stop(proc)


def flow_runs(api: str, deployment: str = DEPLOYMENT) -> list[dict]:
    """Every run of the deployment, by expected start time."""
    body = {"deployments": {"name": {"any_": [deployment]}}, "sort": "EXPECTED_START_TIME_ASC"}
    r = httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10)
    r.raise_for_status()
    return r.json()


def finished(runs: list[dict]) -> list[dict]:
    """Runs that ran to an end state (completed or failed), by start time."""
    done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")
            and r["start_time"] and r["end_time"]]  # fmt: skip
    return sorted(done, key=lambda r: r["start_time"])


def wait_for_runs(
    api: str, enough: Callable[[list[dict]], bool], timeout: float, poll: float = 1.0
) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = flow_runs(api)
        if enough(runs):
            return runs
        if time.monotonic() > deadline:
            states = [(r["name"], r["state_type"]) for r in runs]
            raise TimeoutError(f"not enough scheduled runs after {timeout:.0f} s: {states}")
        time.sleep(poll)


def seconds(run: dict) -> float:
    """Wall time of a finished run, start to end."""
    return (_when(run["end_time"]) - _when(run["start_time"])).total_seconds()


def overlaps(runs: list[dict]) -> int:
    """How many pairs of finished runs were running at the same time."""
    spans = sorted((_when(r["start_time"]), _when(r["end_time"])) for r in finished(runs))
    return sum(1 for i, a in enumerate(spans) for b in spans[i + 1 :] if b[0] < a[1])


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _stop(proc: subprocess.Popen) -> None:
    """Stop the process group (its children too, even where the leader is gone already)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
