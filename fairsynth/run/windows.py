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
from dataclasses import dataclass, field

import numpy as np

from fairsynth.core.quotas import remaining_target
from fairsynth.core.unmixing import unmix
from fairsynth.verify.verdict import Verdict


@dataclass(frozen=True)
class BatchSpec:
    """Everything a worker needs to produce batch ``batch`` (noise derives from seed, batch)."""

    batch: int
    job: int
    size: int
    target: tuple[float, ...]  # the guidance target over cells
    seed: int
    window: int  # the first batch of the window this batch belongs to


def tail_batch_size(missing: int, batch_size: int, min_batch: int, overshoot: float = 1.5) -> int:
    """A full batch while much is missing; near the end about ``overshoot`` x what is missing
    (never below ``min_batch``), so the last few samples do not cost a whole batch each."""
    return int(min(batch_size, max(min_batch, math.ceil(overshoot * missing))))


@dataclass(frozen=True)
class WindowPolicy:
    """How windows are planned: ``size`` batches at most, full batches of ``batch_size`` while
    much is missing, then about ``overshoot`` x the rest (never below ``min_batch``); never
    past ``budget`` samples generated; batch seeds from ``seed``."""

    size: int
    batch_size: int
    min_batch: int
    budget: int
    seed: int
    overshoot: float = 1.5


def plan_window(
    quotas: list[np.ndarray],
    accepted: list[np.ndarray],
    generated: int,
    first_batch: int,
    policy: WindowPolicy,
    confusions: list[np.ndarray | None] | None = None,
) -> list[BatchSpec]:
    """The next window's batches ([] when every quota is met or the budget is spent; the
    batches never take ``generated`` past ``budget``).

    Jobs (prompts) are served in order of samples missing, largest first. Within a job the
    window plans as the sequential loop would if every planned sample were accepted: full
    batches while much is missing, then one of about ``overshoot`` x the rest (never below
    ``min_batch``). So a window never plans much more than is missing; what rejections leave
    open, the next window plans.
    """
    size, budget = policy.size, policy.budget
    missing = [int(np.maximum(q - a, 0).sum()) for q, a in zip(quotas, accepted, strict=True)]
    order = sorted((k for k, m in enumerate(missing) if m > 0), key=lambda k: (-missing[k], k))
    specs: list[BatchSpec] = []
    planned = generated
    for job in order:
        remaining = remaining_target(quotas[job], accepted[job])
        if remaining is not None and confusions and confusions[job] is not None:  # verified cells
            remaining = unmix(remaining, confusions[job])
        target = tuple(float(x) for x in remaining)
        rest = missing[job]
        while rest > 0 and len(specs) < size and planned < budget:
            # the budget is a hard cap on samples generated: the last batch shrinks to fit it
            n = min(
                tail_batch_size(rest, policy.batch_size, policy.min_batch, policy.overshoot),
                budget - planned,
            )
            specs.append(
                BatchSpec(
                    batch=first_batch + len(specs),
                    job=job,
                    size=n,
                    target=target,
                    seed=policy.seed,
                    window=first_batch,
                )  # fmt: skip
            )
            planned += n
            rest -= n
    return specs


@dataclass
class BatchOutput:
    """What a worker sends back for one batch spec: the images and their verdict (not judged:
    judging needs the global quota state, so it happens in the flow, in batch order)."""

    spec: BatchSpec
    images: np.ndarray  # uint8 NHWC
    verdict: Verdict
    seconds: float
    worker: str = "local"
    verifier_crashes: list[str] = field(default_factory=list)
    # seconds: "sample" (generation), "verify", "wait" (the flow blocked on this output)
    timing: dict = field(default_factory=dict)
