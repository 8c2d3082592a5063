"""Producing a batch: generate it (guided toward the spec's target) and verify it, wherever
it runs. What comes back is judged in the flow (``fairsynth.run.judge``)."""

from __future__ import annotations

import time

import numpy as np

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.guided import GuidedSampler
from fairsynth.run.windows import BatchOutput, BatchSpec
from fairsynth.verify import Verifier


class BatchProducer:
    """Generates and verifies batch specs: one guided sampler per job (the model bound to the
    job's prompt, with the ADP), and the verifier, loaded once. Runs in the flow's process or
    on a worker (``device``: where its models run)."""

    def __init__(
        self,
        samplers: list[GuidedSampler],
        verifier: Verifier,
        space: AttributeSpace,
        worker: str = "local",
        device: str = "cpu",
    ):
        self.samplers, self.verifier, self.space = samplers, verifier, space
        self.worker, self.device = worker, device

    @property
    def adp(self) -> TrainedADP | None:
        return self.samplers[0].adp

    def produce(self, spec: BatchSpec) -> BatchOutput:
        images, seconds = self.generate(spec)
        return self.verify(spec, images, seconds)

    def generate(self, spec: BatchSpec) -> tuple[np.ndarray, float]:
        """The batch's images (uint8 NHWC) and the seconds they took."""
        target = Target(self.space, np.asarray(spec.target, dtype=np.float64))
        t0 = time.perf_counter()
        images = self.samplers[spec.job].batch(spec.seed, spec.batch, spec.size, target)
        return images, time.perf_counter() - t0

    def verify(self, spec: BatchSpec, images: np.ndarray, sample_seconds: float) -> BatchOutput:
        crashes_before = len(getattr(self.verifier, "crashes", []))
        t0 = time.perf_counter()
        verdict = self.verifier.verify(images)
        verify_seconds = time.perf_counter() - t0
        crashes = list(getattr(self.verifier, "crashes", []))[crashes_before:]
        timing = {"sample": sample_seconds, "verify": verify_seconds}
        return BatchOutput(spec, images, verdict, sample_seconds + verify_seconds, self.worker,
                           crashes, timing)  # fmt: skip

    def close(self) -> None:
        self.verifier.close()
