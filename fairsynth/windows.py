"""Planning generation in windows: the batches that can run at the same time.

A window is up to ``size`` batches planned together from the state at its start: each batch
gets its job, its number of samples and its guidance target (the job's remaining quota,
normalised). The batches of a window may run in any order on any number of workers; their
results are judged in batch order afterwards. So the published dataset depends on the window
size, never on the engine or on how many workers ran it, and a resumed run re-plans a window
from the ledger exactly as the first run did.

With ``size`` 1 this is the sequential loop: one batch, re-planned after every result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fairsynth.plan import remaining_target


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs to produce batch ``batch`` (noise derives from seed, batch)."""

    batch: int
    job: int
    size: int
    target: tuple[float, ...]  # the guidance target over cells
    seed: int
    window: int  # the first batch of the window this batch belongs to


def plan_window(
    quotas: list[np.ndarray],
    accepted: list[np.ndarray],
    generated: int,
    first_batch: int,
    *,
    size: int,
    batch_size: int,
    min_batch: int,
    budget: int,
    seed: int,
    overshoot: float = 1.5,
) -> list[BatchSpec]:
    """The next window's batches ([] when every quota is met or the budget is spent).

    Jobs (prompts) are served in order of samples missing, largest first. A job gets about
    ``overshoot`` x its missing samples, in as few full batches as that needs (never more than
    the slots left, batches never below ``min_batch``): a window does not split a job's last
    few samples into many small batches, whose batch-mean guidance would be coarse.
    """
    missing = [int(np.maximum(q - a, 0).sum()) for q, a in zip(quotas, accepted, strict=True)]
    order = sorted((k for k, m in enumerate(missing) if m > 0), key=lambda k: (-missing[k], k))
    specs: list[BatchSpec] = []
    planned = generated
    for job in order:
        slots = size - len(specs)
        if slots <= 0 or planned >= budget:
            break
        want = math.ceil(overshoot * missing[job])
        n_batches = min(slots, max(1, math.ceil(want / batch_size)))
        per_batch = int(min(batch_size, max(min_batch, math.ceil(want / n_batches))))
        target = remaining_target(quotas[job], accepted[job])
        for _ in range(n_batches):
            if planned >= budget:
                break
            specs.append(
                BatchSpec(
                    batch=first_batch + len(specs),
                    job=job,
                    size=per_batch,
                    target=tuple(float(x) for x in target),
                    seed=seed,
                    window=first_batch,
                )
            )
            planned += per_batch
    return specs
