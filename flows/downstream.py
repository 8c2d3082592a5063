"""The downstream flow: train the label classifier on the reference alone, with fairsynth or
rejection-sampled samples, resampled or reweighted, over many seeds, and report Fairlearn's
group metrics with paired 95 % intervals.

python -m flows.downstream [params.yaml]

Runs after the balance flow (it reads the published shards). The same library functions as
the DVC stage ``downstream`` (``fairsynth.experiments.downstream``), as Prefect tasks.
"""

from __future__ import annotations

import argparse
import time

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from fairsynth.app.config import Params, load_params
from fairsynth.experiments.downstream import (
    build_control,
    format_report,
    load_train_sets,
    run_one,
    scenarios,
    selected_settings,
    test_set,
    write_report,
)


@task(name="rejection-control", retries=1, retry_delay_seconds=5)
def control_task(params: Params) -> str:
    return str(build_control(params))


@task(name="train-evaluate", cache_policy=NO_CACHE)  # inputs include in-memory tensors
def train_evaluate_task(params: Params, scenario: str, setting: str, seed: int, sets: dict,
                        test) -> dict:  # fmt: skip
    return run_one(params, scenario, setting, seed, sets, test)


@task(name="downstream-report", cache_policy=NO_CACHE)
def report_task(params: Params, runs: list[dict], seconds: float) -> dict:
    report = write_report(params, runs, seconds)
    create_markdown_artifact(
        key="downstream-fairness",
        markdown="**Downstream fairness** (Fairlearn group metrics, 95 % CI over seeds)\n\n```\n"
        f"{format_report(report)}\n```\n\nPlot: `{params.downstream.out}/group_accuracy.png`\n",
    )
    return report


@flow(name="downstream")
def downstream(params_file: str = "params.yaml") -> dict:
    from pathlib import Path

    params = load_params(params_file)  # validated before any work starts
    params.downstream.check_attributes(params.attribute_space().names)
    t0 = time.time()
    chosen = selected_settings(params)
    control = Path(control_task(params)) if "reference+rejection" in chosen else None
    test = test_set(params)
    runs = []
    for scenario in scenarios(params):
        sets = load_train_sets(params, scenario, control, chosen)  # read once, shared by the runs
        runs += [
            train_evaluate_task(params, scenario.name, setting, seed, sets, test)
            for setting in chosen
            for seed in params.downstream.seeds
        ]
    return report_task(params, runs, time.time() - t0)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="fairsynth downstream flow")
    ap.add_argument("params", nargs="?", default="params.yaml")
    report = downstream(ap.parse_args(argv).params)
    print(format_report(report))


if __name__ == "__main__":
    main()
