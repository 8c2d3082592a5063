"""Quota-driven guided generation.

Each batch is guided toward the *remaining* quota, normalised (cells already full get target
0; see ``fairsynth.run.windows`` for how batches are planned), every sample is judged by the
verifier, and a sample is accepted only while its verified cell has room and the verifier is
confident. Rejections are kept with a reason. Producing a batch (``BatchProducer``: generate +
verify) is separate from judging it (``judge``: quotas), so batches can be produced on
other workers and judged in order here. Batch b's noise derives from (seed, b) only, so any
batch can be regenerated alone, anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fairsynth.core.attributes import AttributeSpace
from fairsynth.run.windows import BatchOutput, tail_batch_size
from fairsynth.verify import Verdict

ACCEPTED = "accepted"
LOW_CONFIDENCE = "low_confidence"
CELL_FULL = "cell_full"


@dataclass
class JudgedBatch:
    batch: int
    images: np.ndarray  # uint8 NHWC, all samples of the batch
    cells: np.ndarray  # verified cell per sample
    confidence: np.ndarray  # min over guided attributes of the verifier's max probability
    probs: dict[str, np.ndarray]  # verifier probabilities per attribute
    reasons: list[str]
    target: np.ndarray  # the batch's guidance target (remaining quota, normalised)
    seconds: float
    second: dict[str, np.ndarray] | None = None  # the second verifier's probabilities


@dataclass
class GenerationState:
    quotas: np.ndarray
    accepted: np.ndarray
    generated: int = 0
    next_batch: int = 0
    seconds: float = 0.0
    history: list[dict] = field(default_factory=list)

    def replay(self, batch: int, rows: list[dict], cell_names: list[str]) -> None:
        """Count a batch recorded by an earlier run (its manifest rows) as if run now."""
        if batch != self.next_batch:
            raise ValueError(
                f"ledger batch {batch} replayed out of order (expected {self.next_batch})"
            )
        index = {name: i for i, name in enumerate(cell_names)}
        for row in rows:
            if row["accepted"]:
                self.accepted[index[row["cell"]]] += 1
        self.generated += len(rows)
        self.next_batch = batch + 1
        self.history.append({"batch": batch, "accepted": sum(r["accepted"] for r in rows),
                             "generated": len(rows), "replayed": True})  # fmt: skip

    @property
    def done(self) -> bool:
        return bool((self.accepted >= self.quotas).all())


def accept_verdict(
    verdict: Verdict,
    space: AttributeSpace,
    quotas: np.ndarray,
    accepted: np.ndarray,
    confidence: float,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Verified cells, confidences and accept/reject reasons; updates ``accepted`` in place.

    A sample the verifier could not judge (no face, several faces) is rejected with that reason.
    """
    probs = verdict.probs
    missing = [n for n in space.names if n not in probs]
    if missing:
        raise ValueError(f"the verifier does not judge attribute(s) {missing}")
    cells = space.cell_index({n: probs[n].argmax(1) for n in space.names})
    conf = np.stack([probs[n].max(1) for n in space.names]).min(0)
    reasons = []
    for c, p, why in zip(cells, conf, verdict.rejects, strict=True):
        if why is not None:
            reasons.append(why)
        elif p < confidence:
            reasons.append(LOW_CONFIDENCE)
        elif accepted[c] >= quotas[c]:
            reasons.append(CELL_FULL)
        else:
            accepted[c] += 1
            reasons.append(ACCEPTED)
    return cells, conf, reasons


def next_batch_size(
    state: GenerationState, batch_size: int, min_batch: int = 8, overshoot: float = 1.5
) -> int:
    """The sequential loop's next batch size (``windows.tail_batch_size`` of what is missing)."""
    missing = int(np.maximum(state.quotas - state.accepted, 0).sum())
    return tail_batch_size(missing, batch_size, min_batch, overshoot)


def judge(
    out: BatchOutput, state: GenerationState, space: AttributeSpace, confidence: float
) -> JudgedBatch:
    """Accept or reject the samples of one produced batch against ``state`` (updated)."""
    spec = out.spec
    if spec.batch != state.next_batch:
        raise ValueError(f"batch {spec.batch} judged out of order (expected {state.next_batch})")
    cells, conf, reasons = accept_verdict(
        out.verdict, space, state.quotas, state.accepted, confidence
    )
    state.generated += len(out.images)
    state.next_batch = spec.batch + 1
    state.seconds += out.seconds
    state.history.append(
        {
            "batch": spec.batch,
            "accepted": reasons.count(ACCEPTED),
            "generated": len(out.images),
            "seconds": round(out.seconds, 3),
            "worker": out.worker,
        }
    )
    return JudgedBatch(
        spec.batch, out.images, cells, conf, out.verdict.probs, reasons,
        np.asarray(spec.target), out.seconds, out.verdict.second,
    )  # fmt: skip


def shortfall(state: GenerationState, space: AttributeSpace) -> dict[str, int]:
    """Cells whose quota was not met, with how many samples they lack."""
    lack = state.quotas - np.minimum(state.accepted, state.quotas)
    return {name: int(v) for name, v in zip(space.cell_names(), lack, strict=True) if v > 0}
