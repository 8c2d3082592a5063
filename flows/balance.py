"""The end-to-end balancing flow: reference -> audit -> ADP -> quota-driven generation -> report.

python -m flows.balance [params.yaml]                 # run once
python -m flows.balance params.yaml --serve "0 3 * * *"   # scheduled (needs a Prefect server)
"""

from __future__ import annotations

import argparse

from prefect import flow

from fairsynth.app.config import load_params
from tasks.pipeline import (
    audit_task,
    generate_on_workers,
    generate_task,
    reference_task,
    report_task,
    train_adp_cached,
)


@flow(name="balance")
def balance(params_file: str = "params.yaml", adp_out: str = "data/adp") -> dict:
    params = load_params(params_file)  # validated before any work starts
    reference = reference_task(params)
    audit_report = audit_task(params, reference)
    adp_path = None
    if params.guidance.mode != "none":
        if params.adp.path == "toyfaces" or params.adp.path != adp_out:
            adp_path = None  # the params' own ADP, named as they name it (it is in the hashes)
        else:
            adp_path = train_adp_cached(params, adp_out)
    if params.scale.mode == "dask":
        generation = generate_on_workers(params, audit_report, adp_path)
    else:
        generation = generate_task(params, audit_report, adp_path)
    return report_task(params, audit_report, generation)


def balance_for(params_file: str = "params.yaml"):
    """The balance flow on the task runner the params' ``scale`` asks for (DaskTaskRunner)."""
    params = load_params(params_file)
    if params.scale.mode == "dask":
        from tasks.scale import dask_task_runner

        return balance.with_options(task_runner=dask_task_runner(params))
    return balance


def run_balance(params_file: str = "params.yaml", adp_out: str = "data/adp") -> dict:
    return balance_for(params_file)(params_file, adp_out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fairsynth balance flow")
    ap.add_argument("params", nargs="?", default="params.yaml")
    ap.add_argument(
        "--serve", metavar="CRON", help="serve as a scheduled deployment with this cron"
    )
    a = ap.parse_args(argv)
    if a.serve:
        balance_for(a.params).serve(
            name="balance-scheduled", cron=a.serve, parameters={"params_file": a.params}
        )
    else:
        print(run_balance(a.params))


if __name__ == "__main__":
    main()
