"""The end-to-end balancing flow: reference -> audit -> ADP -> quota-driven generation -> report.

python -m flows.balance [params.yaml]                            # run once
python -m flows.balance params.yaml --serve "0 3 * * *"          # scheduled (a Prefect server)
python -m flows.balance params.yaml --serve-every 3600           # every hour

A run takes the one-writer lock of every output it writes before its first stage; a run whose
output is up to date generates nothing (``stage_generate``) and trains nothing. The served
deployment runs one at a time: a tick that comes while a run is still going is cancelled
(``CANCEL_NEW``), never queued behind it, so a slow run cannot build up a backlog. A run that
fails ends in a state that names the stage and what failed in it (key, file or sample), and
the ``balance-report`` artifact then shows the failure above the last published report.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prefect import flow
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from fairsynth.app.config import load_params
from fairsynth.app.errors import USER_ERRORS, StageFailed
from fairsynth.app.errors import report as report_error
from fairsynth.app.stages.common import pipeline_outputs
from fairsynth.run.lock import output_locks
from tasks.pipeline import (
    audit_task,
    generate_on_workers,
    generate_task,
    reference_task,
    report_failure,
    report_task,
    train_adp_cached,
)

# the served deployment's collision policy: one run at a time, a new tick meanwhile is cancelled
ONE_AT_A_TIME = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)


def _trains_adp(params, adp_out: str) -> bool:
    # the params' own ADP (a path other than adp_out, or a world's) is used as named: in the hashes
    return params.guidance.mode != "none" and params.adp.path == adp_out != "toyfaces"


def _report_dir(params_file: str) -> Path:
    """Where the params put the report (the default when they cannot be read)."""
    try:
        return Path(load_params(params_file).output.report_dir)
    except Exception:
        return Path("data/report")


@flow(name="balance")
def balance(params_file: str = "params.yaml", adp_out: str = "data/adp") -> dict:
    stage = Stage("params")
    try:
        params = load_params(params_file)  # validated before any work starts
        trains = _trains_adp(params, adp_out)
        stage.now = "output locks"
        with output_locks(pipeline_outputs(params, adp_out if trains else None)):
            reference = stage.run("reference", reference_task, params)
            audit_report = stage.run("audit", audit_task, params, reference)
            adp_path = stage.run("train_adp", train_adp_cached, params, adp_out) if trains else None
            generate = generate_on_workers if params.scale.mode == "dask" else generate_task
            generation = stage.run("generate", generate, params, audit_report, adp_path)
            return stage.run("report", report_task, params, audit_report, generation)
    except Exception as exc:
        # the flow run's final state names the stage and the key, file or sample; the
        # balance-report artifact keeps the last published report beside the failure
        failure = StageFailed(stage.now, exc)
        try:
            report_failure(failure, params_file, _report_dir(params_file))
        except Exception as why:  # the artifact is a courtesy: never hide the failure itself
            print(f"fairsynth: warning: no failure artifact ({why})", file=sys.stderr)
        raise failure from exc


class Stage:
    """Which stage the flow is in, for the message of a failed run."""

    def __init__(self, now: str):
        self.now = now

    def run(self, name: str, fn, *args):
        self.now = name
        return fn(*args)


def balance_for(params_file: str = "params.yaml"):
    """The balance flow on the task runner the params' ``scale`` asks for (DaskTaskRunner)."""
    params = load_params(params_file)
    if params.scale.mode == "dask":
        from tasks.scale import dask_task_runner

        return balance.with_options(task_runner=dask_task_runner(params))
    return balance


def run_balance(params_file: str = "params.yaml", adp_out: str = "data/adp") -> dict:
    return balance_for(params_file)(params_file, adp_out)


def deployment(params_file: str, cron: str | None = None, every: float | None = None):
    """The deployment ``balance/balance-scheduled``: on ``cron`` or every ``every`` seconds, one
    run at a time (``ONE_AT_A_TIME``)."""
    return balance_for(params_file).to_deployment(
        name="balance-scheduled", cron=cron, interval=every, concurrency_limit=ONE_AT_A_TIME,
        parameters={"params_file": params_file},
    )  # fmt: skip


def serve(params_file: str, cron: str | None = None, every: float | None = None) -> None:
    """Serve the deployment from this process (needs a Prefect server: ``PREFECT_API_URL``)."""
    from prefect import serve as serve_deployments

    serve_deployments(deployment(params_file, cron, every))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fairsynth balance flow")
    ap.add_argument("params", nargs="?", default="params.yaml")
    when = ap.add_mutually_exclusive_group()
    when.add_argument("--serve", metavar="CRON", help="serve as a deployment on this cron")
    when.add_argument("--serve-every", metavar="SECONDS", type=float,
                      help="serve as a deployment run every SECONDS")  # fmt: skip
    a = ap.parse_args(argv)
    if a.serve or a.serve_every:
        serve(a.params, cron=a.serve, every=a.serve_every)
    else:
        try:
            print(run_balance(a.params))
        except (StageFailed, *USER_ERRORS) as exc:  # one line naming the stage, key or file
            sys.exit(report_error(exc))


if __name__ == "__main__":
    main()
