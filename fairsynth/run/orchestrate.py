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

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np

from fairsynth.data import shards
from fairsynth.data.runlog import split_run_facts, write_run_record
from fairsynth.run.judge import ACCEPTED, GenerationState, judge
from fairsynth.run.ledger import Ledger, LedgerBatch, ledger_dir
from fairsynth.run.publish import batch_records, publish, record_version
from fairsynth.run.spec import ProducerRecipe, RunSpec
from fairsynth.run.windows import BatchOutput, BatchSpec, WindowPolicy, plan_window


class Executor(Protocol):
    def map(self, recipe: ProducerRecipe, specs: list[BatchSpec]) -> Iterator[BatchOutput]: ...

    def close(self) -> None: ...


def generate_dataset(
    run: RunSpec,
    executor: Executor,
    progress: bool = True,
    on_batch: Callable[[GenerationState], None] | None = None,
) -> dict:
    """Generate until every quota is met (or the budget is spent), then publish shards and
    the manifest from the ledger. Returns the run summary (also written as ``index.json``)."""
    t_start = time.time()
    out = run.output_dir
    if run.topup is None:  # until this run completes, it is not complete
        (out / "index.json").unlink(missing_ok=True)
    # (a top-up leaves its parent's index in place: the parent stays complete until replaced)
    gen = _Generation(run, on_batch)
    pending = _replay(run, gen.ledger, gen.states, gen.rows)
    resumed = max((s.next_batch for s in gen.states), default=run.first_batch)
    if progress:
        gen.show_progress(resumed)
    next_batch = resumed
    while not all(s.done for s in gen.states):
        specs = pending or _next_window(run, gen.states, next_batch)
        pending = []
        if not specs:
            break  # budget spent
        outputs = ordered(executor.map(run.recipe, specs), specs)
        for output in outputs:
            gen.take(output)
            next_batch = output.spec.batch + 1
            if all(s.done for s in gen.states):
                outputs.close()  # the rest of the window is not needed (nor judged)
                break
    if gen.bar is not None:
        gen.bar.close()
    summary = publish(run, gen.ledger, gen.rows, gen.states)
    summary["fingerprint"] = run.fingerprint_id  # what decided the samples (see the ledger)
    summary["resumed_at_batch"] = resumed if resumed > run.first_batch else 0
    summary["verifier_crashes"] = gen.crashes
    summary["scale"] = {
        "mode": run.scale.mode,
        "window": run.window,
        "workers": sorted(gen.workers),
        "overlap": run.scale.overlap,
    }
    summary["time_split"] = {k: round(v, 2) for k, v in gen.split.items()}
    summary["wall_seconds"] = round(time.time() - t_start, 2)
    # workers and timings vary, the data does not
    index, facts = split_run_facts(summary, extra=("scale", "time_split"))
    write_run_record(out, facts)  # timings and resume point: beside the output, not in it
    record_version(out, index)
    shards.write_json(out / "index.json", index)  # written last: the run is complete
    gen.ledger.remove()
    return summary


class _Generation:
    """A run while it generates: the jobs' states, the ledger, the manifest rows so far, the
    progress bar, and what the run reports (verifier crashes, workers, where time went)."""

    def __init__(self, run: RunSpec, on_batch: Callable[[GenerationState], None] | None):
        first = run.first_batch
        self.run, self.on_batch, self.bar = run, on_batch, None
        self.ledger = Ledger(ledger_dir(run.output_dir, run.fingerprint_id), run.fingerprint,
                             first_batch=first)  # fmt: skip
        self.states = [GenerationState(quotas=j.quotas.copy(), accepted=np.zeros_like(j.quotas),
                                       next_batch=first) for j in run.jobs]  # fmt: skip
        self.rows: list[dict] = []
        self.crashes: list[str] = []  # verifier crashes, as each batch reports them
        self.workers: set[str] = set()
        self.split = dict.fromkeys(("sampling", "verifying", "ledger", "idle"), 0.0)  # seconds

    def show_progress(self, resumed: int) -> None:
        from tqdm import tqdm

        total = int(sum(j.quotas.sum() for j in self.run.jobs))
        self.bar = tqdm(total=total, desc="accepted", unit="sample")
        self.bar.update(int(sum(np.minimum(s.accepted, s.quotas).sum() for s in self.states)))
        if resumed > self.run.first_batch:
            self.bar.write(f"resumed from the ledger at batch {resumed} ({self.ledger.path})")

    def take(self, output: BatchOutput) -> None:
        """Judge one batch's output against its job's quotas and put it in the ledger."""
        spec = output.spec
        state = self.states[spec.job]
        state.next_batch = spec.batch
        t_ledger = time.perf_counter()
        res = judge(output, state, self.run.space, self.run.confidence)
        batch_rows, batch_samples = batch_records(self.run, spec.job, res)
        self.ledger.append(res.batch, batch_rows, batch_samples)
        self.split["ledger"] += time.perf_counter() - t_ledger
        _add_timing(self.split, output.timing)
        self.rows.extend(batch_rows)
        self.crashes.extend(output.verifier_crashes)
        self.workers.add(output.worker)
        if self.bar is not None:
            self.bar.update(int(sum(r == ACCEPTED for r in res.reasons)))
            self.bar.set_postfix(generated=sum(s.generated for s in self.states))
        if self.on_batch is not None:
            self.on_batch(state)


def _add_timing(split: dict[str, float], timing: dict) -> None:
    """Sampling and verifying as the producer measured them; idle: the flow waiting on an output
    (with overlap or workers, the time generation was ahead of the flow is not idle)."""
    split["sampling"] += timing.get("sample", 0.0)
    split["verifying"] += timing.get("verify", 0.0)
    split["idle"] += timing.get("wait", 0.0)


def _next_window(run: RunSpec, states: list[GenerationState], first_batch: int) -> list[BatchSpec]:
    policy = WindowPolicy(run.window, run.batch_size, run.min_batch, run.budget, run.seed)
    return plan_window(
        [s.quotas for s in states], [s.accepted for s in states],
        sum(s.generated for s in states), first_batch, policy,
        confusions=[job.confusion for job in run.jobs],
    )  # fmt: skip


def _replay(run: RunSpec, ledger: Ledger, states, rows: list) -> list[BatchSpec]:
    """Count the ledger's batches window by window, re-planning each window exactly as the
    first run did. Returns the specs of a window the last run left unfinished."""
    recorded = ledger.batches()
    done: LedgerBatch | None = next(recorded, None)
    first = run.first_batch
    while done is not None:
        specs = _next_window(run, states, first)
        if not specs:
            raise ValueError(f"{ledger.path}: batch {done.batch} recorded beyond the plan")
        for k, spec in enumerate(specs):
            if done is None or all(s.done for s in states):
                return specs[k:] if done is None else []
            _check_replay(ledger, spec, done)
            state = states[spec.job]
            state.next_batch = spec.batch
            state.replay(done.batch, done.rows, run.space.cell_names())
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


def ordered(outputs: Iterable[BatchOutput], specs: list[BatchSpec]) -> Iterator[BatchOutput]:
    """Check that outputs come back for exactly ``specs``, in order."""
    for spec, out in zip(specs, outputs, strict=True):
        if out.spec != spec:
            raise RuntimeError(f"executor returned batch {out.spec.batch} for {spec.batch}")
        yield out
