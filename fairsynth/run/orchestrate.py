"""One generation run: quota-driven, windowed, crash-safe, on any executor.

The flow plans a window of batch specs from the quota state (``fairsynth.run.windows``), an
executor produces them (this process or Dask workers, ``fairsynth.run.executors``), and the
outputs are judged here in batch order against the global quotas, each batch written to the
ledger before the next is judged. When every quota is met the rest of the window is dropped
unjudged. The result depends on the params (window size included), not on the executor, the
number of workers or their order of finishing; a run killed at any moment resumes from the
ledger and publishes the same shards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fairsynth.app.config import Params
from fairsynth.core.attributes import AttributeSpace
from fairsynth.core.filehash import files_signature, local_model_path
from fairsynth.core.quotas import plan_augment, plan_standalone
from fairsynth.data import shards
from fairsynth.data.runlog import split_run_facts, write_run_record
from fairsynth.run.executors import Executor, ordered
from fairsynth.run.judge import ACCEPTED, GenerationState, judge_output
from fairsynth.run.ledger import Ledger, LedgerBatch, fingerprint, ledger_dir
from fairsynth.run.publish import batch_records, publish
from fairsynth.run.windows import BatchSpec, plan_window
from fairsynth.toyfaces import resolve


def guidance_hash(params: Params) -> str:
    blob = json.dumps(
        {
            "guidance": params.guidance.__dict__,
            "model": params.model.__dict__,
            "adp": params.adp.__dict__,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan_quotas(params: Params, audit_report: dict | None) -> np.ndarray:
    target = params.build_target()
    if params.generate.mode == "standalone":
        return plan_standalone(target.probs, params.generate.n)
    if audit_report is None:
        raise ValueError("generate.mode augment needs the reference audit (run the audit stage)")
    if audit_report["cells"] != target.space.cell_names():
        raise ValueError(
            "the audit was made for other cells than the target's; re-run the audit stage"
        )
    return plan_augment(target.probs, np.asarray(audit_report["counts"]))


def generation_fingerprint(params: Params, quotas: np.ndarray) -> dict:
    """Everything that decides which samples a run generates and accepts (not the budget)."""
    target = params.build_target()
    return {
        "quotas": quotas.tolist(),
        "target": target.probs.round(9).tolist(),
        "cells": target.space.cell_names(),
        "guidance": guidance_hash(params),
        "model_files": files_signature(local_model_path(resolve("model", params.model.path))),
        "adp_files": files_signature(resolve("adp", params.adp.path))
        if params.guidance.mode != "none"
        else None,
        "verify": dataclasses.asdict(params.verify),
        "verifier_files": files_signature(resolve("verifier", params.verify.verifier))
        if params.verify.verifier != "deepface"
        else None,
        "second_verifier_files": files_signature(resolve("verifier", params.verify.second))
        if params.verify.second not in (None, "deepface")
        else None,
        "seed": params.generate.seed,
        "dataset": params.generate.dataset,
        "min_batch": params.generate.min_batch,
        "window": params.scale.window,  # not the engine or the worker count: they change nothing
    }


def plan_jobs(params: Params, audit_report: dict | None) -> list[tuple]:
    """(prompt or None, target, quotas) per generation job."""
    jobs = params.jobs()
    if params.model.kind != "text2image":
        prompt, target, _ = jobs[0]
        return [(prompt, target, plan_quotas(params, audit_report))]
    return [(p, t, plan_standalone(t.probs, n)) for p, t, n in jobs]


def generate_dataset(
    params: Params,
    audit_report: dict | None,
    executor: Executor,
    progress: bool = True,
    on_batch: Callable[[GenerationState], None] | None = None,
) -> dict:
    """Generate until every quota is met (or the budget is spent), then publish shards and
    the manifest from the ledger. Returns the run summary (also written as ``index.json``)."""
    t_start = time.time()
    out = Path(params.output.dir)
    space = params.build_target().space
    jobs = plan_jobs(params, audit_report)
    (out / "index.json").unlink(missing_ok=True)  # until this run completes, it is not complete
    fp = generation_fingerprint(params, np.stack([q for _, _, q in jobs]))
    ledger = Ledger(ledger_dir(out, fingerprint(fp)), fp)
    states = [GenerationState(quotas=q.copy(), accepted=np.zeros_like(q)) for _, _, q in jobs]
    rows: list[dict] = []
    pending = _replay(params, ledger, states, space, rows)
    resumed = max((s.next_batch for s in states), default=0)
    total = int(sum(q.sum() for _, _, q in jobs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="accepted", unit="sample")
        bar.update(int(sum(np.minimum(s.accepted, s.quotas).sum() for s in states)))
        if resumed:
            bar.write(f"resumed from the ledger at batch {resumed} ({ledger.path})")
    crashes: list[str] = []  # verifier crashes, as each batch reports them
    workers: set[str] = set()
    ghash = guidance_hash(params)
    next_batch = resumed
    while not all(s.done for s in states):
        specs = pending or _plan(params, states, next_batch)
        pending = []
        if not specs:
            break  # budget spent
        outputs = ordered(executor.map(specs), specs)
        for output in outputs:
            spec = output.spec
            state = states[spec.job]
            state.next_batch = spec.batch
            res = judge_output(output, state, space, params.verify.confidence)
            batch_rows, batch_samples = batch_records(params, space, spec.job, res, ghash)
            ledger.append(res.batch, batch_rows, batch_samples)
            rows.extend(batch_rows)
            crashes.extend(output.verifier_crashes)
            workers.add(output.worker)
            next_batch = spec.batch + 1
            if bar is not None:
                bar.update(int(sum(r == ACCEPTED for r in res.reasons)))
                bar.set_postfix(generated=sum(s.generated for s in states))
            if on_batch is not None:
                on_batch(state)
            if all(s.done for s in states):
                outputs.close()  # the rest of the window is not needed (nor judged)
                break
    if bar is not None:
        bar.close()

    summary = publish(params, out, ledger, rows, states, jobs, space)
    summary["fingerprint"] = fingerprint(fp)  # what decided the samples (see the ledger)
    summary["resumed_at_batch"] = resumed
    summary["verifier_crashes"] = crashes
    summary["scale"] = {
        "mode": params.scale.mode,
        "window": params.scale.window,
        "workers": sorted(workers),
    }
    summary["wall_seconds"] = round(time.time() - t_start, 2)
    index, facts = split_run_facts(summary, extra=("scale",))  # workers vary, data does not
    write_run_record(out, facts)  # timings and resume point: beside the output, not in it
    shards.write_json(out / "index.json", index)  # written last: the run is complete
    ledger.remove()
    return summary


def expected_fingerprint(params: Params, audit_report: dict | None = None) -> str:
    """The fingerprint a complete run of these params records in its ``index.json``."""
    quotas = np.stack([q for _, _, q in plan_jobs(params, audit_report)])
    return fingerprint(generation_fingerprint(params, quotas))


def _plan(params: Params, states: list[GenerationState], first_batch: int) -> list[BatchSpec]:
    gen = params.generate
    return plan_window(
        [s.quotas for s in states], [s.accepted for s in states],
        sum(s.generated for s in states), first_batch, size=params.scale.window,
        batch_size=params.guidance.batch_size, min_batch=gen.min_batch, budget=gen.budget,
        seed=gen.seed,
    )  # fmt: skip


def _replay(params, ledger: Ledger, states, space: AttributeSpace, rows: list) -> list[BatchSpec]:
    """Count the ledger's batches window by window, re-planning each window exactly as the
    first run did. Returns the specs of a window the last run left unfinished."""
    recorded = ledger.batches()
    done: LedgerBatch | None = next(recorded, None)
    first = 0
    while done is not None:
        specs = _plan(params, states, first)
        if not specs:
            raise ValueError(f"{ledger.path}: batch {done.batch} recorded beyond the plan")
        for k, spec in enumerate(specs):
            if done is None or all(s.done for s in states):
                return specs[k:] if done is None else []
            _check_replay(ledger, spec, done)
            state = states[spec.job]
            state.next_batch = spec.batch
            state.replay(done.batch, done.rows, space.cell_names())
            rows.extend(done.rows)
            done = next(recorded, None)
        first = specs[-1].batch + 1
    return []


def _check_replay(ledger: Ledger, spec: BatchSpec, done: LedgerBatch) -> None:
    job = int(done.rows[0].get("job", 0)) if done.rows else -1
    target = np.asarray(done.rows[0]["batch_target"]) if done.rows else None
    if (
        done.batch != spec.batch
        or job != spec.job
        or len(done.rows) != spec.size
        or not np.allclose(target, spec.target, atol=1e-5)
    ):
        raise ValueError(
            f"{ledger.path}: batch {done.batch} does not match the plan that replays it; "
            "the ledger was written by another version of fairsynth: delete it to start over"
        )








