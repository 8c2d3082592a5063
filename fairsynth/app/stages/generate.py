"""The generate stage: quota-driven guided generation, verification and publication of shards and manifest, on the executor ``scale`` names."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from fairsynth.app.config import Params, replace
from fairsynth.app.errors import IncompleteDataset
from fairsynth.app.preflight import check_images, check_prompts
from fairsynth.app.runspec import resolve_run
from fairsynth.app.stages.common import read_audit, stage_main
from fairsynth.app.stages.reference import reference_content_id
from fairsynth.app.topup import plan_topup
from fairsynth.app.weights import check_inputs, require_weights
from fairsynth.run.executors import make_executor
from fairsynth.run.judge import GenerationState
from fairsynth.run.ledger import discard_ledger
from fairsynth.run.lock import OutputLock
from fairsynth.run.orchestrate import Executor, generate_dataset
from fairsynth.run.publish import published_summary


def stage_generate(
    params: Params,
    audit_report: dict | None = None,
    progress: bool = True,
    on_batch: Callable[[GenerationState], None] | None = None,
    executor: Executor | None = None,
    force: bool = False,
) -> dict:
    """Quota-driven guided generation, verification, and publication of shards + manifest.

    Batches are produced where ``scale`` says (this process or Dask workers; ``executor``
    overrides it, as the Prefect flow does with its task runner) and judged here. Crash-safe:
    every finished batch goes to the ledger first (``fairsynth.run.ledger``); a run started again
    with the same params replays it and continues. One writer per output. An output that a
    complete run made from the same inputs is left as it is, nothing written, unless ``force``;
    in augment mode, an output made by the same recipe over an earlier reference is topped up
    (``fairsynth.app.topup``): new shards added, the published ones kept.
    """
    require_weights(params)  # before anything is loaded or generated: the whole list at once
    check_images(params)  # the verifiers can judge what the model makes
    check_prompts(params)  # text-to-image: no prompt the text encoder would cut
    run = resolve_run(params, audit_report)
    params.check_budget(int(sum(j.quotas.sum() for j in run.jobs)))  # augment: known only now
    check_inputs(run)  # class names and step count against what the folders say
    with OutputLock(run.output_dir):
        if not force and (done := published_summary(
            run.output_dir, run.fingerprint_id, run.recipe_id, run.reference_id,
            run.reference_counts,
        )):  # fmt: skip
            print(f"{run.output_dir}: up to date (version {done.get('version', 1)}, fingerprint "
                  f"{done['fingerprint']}), nothing generated", file=sys.stderr)  # fmt: skip
            discard_ledger(run.output_dir, done["fingerprint"])
            return done
        if not force and (topup := plan_topup(run)) is not None:
            parent = topup.topup.parent
            print(f"{run.output_dir}: the reference changed since version {parent['version']}: "
                  f"topping it up with {int(topup.jobs[0].quotas.sum())} samples "
                  f"(its {len(parent['shards'])} shards kept)", file=sys.stderr)  # fmt: skip
            run = topup
        own = executor is None
        executor = executor or make_executor(run.scale)
        try:
            return generate_dataset(run, executor, progress, on_batch)
        finally:
            if own:
                executor.close()


def require_complete(summary: dict, params: Params) -> dict:
    """``summary``, when the run filled its quotas or the params accept a partial set; else
    ``IncompleteDataset`` (the command exits 1, the flow fails) naming the shortfall."""
    if not summary.get("complete", True) and not params.generate.accept_partial:
        raise IncompleteDataset(summary)
    return summary


def with_adp(params: Params, adp_path: str | Path | None) -> Params:
    """``params`` reading the ADP in ``adp_path`` (one a pipeline just made), when given."""
    if adp_path is None:
        return params
    return replace(params, adp=replace(params.adp, path=str(adp_path)))


def _cli(params: Params) -> None:
    s = require_complete(
        stage_generate(params, read_audit(params, reference_content_id(params))), params
    )
    print(
        json.dumps({k: s[k] for k in ("accepted", "quotas", "generated", "complete", "shortfall")})
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main("generate", _cli, argv)


if __name__ == "__main__":
    sys.exit(main())
