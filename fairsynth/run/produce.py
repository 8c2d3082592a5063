"""TODO docstring"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.guide import GuidanceConfig
from fairsynth.guidance.guided import sample_batch
from fairsynth.run.windows import BatchSpec
from fairsynth.verify import Verdict, Verifier


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


class BatchProducer:
    """Generates and verifies batch specs: the model (bound to each job's prompt), the ADP and
    the verifier, loaded once. Runs in the flow's process or on a worker."""

    def __init__(self, models: list, adp: TrainedADP | None, verifier: Verifier,
                 space: AttributeSpace, config: GuidanceConfig, steps: int, eta: float,
                 layer: str, worker: str = "local"):  # fmt: skip
        self.models, self.adp, self.verifier = models, adp, verifier
        self.space, self.config = space, config
        self.steps, self.eta, self.layer, self.worker = steps, eta, layer, worker

    def produce(self, spec: BatchSpec) -> BatchOutput:
        target = Target(self.space, np.asarray(spec.target, dtype=np.float64))
        crashes_before = len(getattr(self.verifier, "crashes", []))
        t0 = time.perf_counter()
        images = sample_batch(
            self.models[spec.job], self.adp, target, self.config, spec.seed, spec.batch,
            spec.size, self.steps, self.eta, self.layer,
        )  # fmt: skip
        verdict = self.verifier.verify(images)
        seconds = time.perf_counter() - t0
        crashes = list(getattr(self.verifier, "crashes", []))[crashes_before:]
        return BatchOutput(spec, images, verdict, seconds, self.worker, crashes)

    def close(self) -> None:
        self.verifier.close()
