"""Guided sampling as runs use it: a batch's guidance built from (target, config, ADP) and its
noise and cell assignment derived from (seed, batch) only; several batches, optionally each
guided toward what the earlier ones lack (closed loop on the ADP's own count)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from fairsynth.core.attributes import Target
from fairsynth.core.quotas import residual_target
from fairsynth.diffusion.sampling import (
    Backend,
    SamplerSettings,
    batch_generator,
    sample,
    to_uint8,
)
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.guide import (
    DistributionGuidance,
    Guidance,
    GuidanceConfig,
    SampleGuidance,
    assign_cells,
)


def make_guidance(
    config: GuidanceConfig, adp: TrainedADP | None, target: Target, n: int, rng: np.random.Generator
) -> Guidance | None:
    if config.mode == "none":
        return None
    if adp is None:
        raise ValueError(f"guidance mode {config.mode!r} needs an ADP")
    names = target.space.names
    if config.mode == "distribution":
        return DistributionGuidance(adp, names, target.probs, config)
    return SampleGuidance(adp, names, assign_cells(target.probs, n, rng), config)


@dataclass(frozen=True)
class GuidedSampler:
    """How a run samples: the model (a backend), the sampler settings, the guidance and its
    ADP. A batch's noise and cell assignment derive from (seed, batch) only."""

    backend: Backend
    settings: SamplerSettings
    config: GuidanceConfig
    adp: TrainedADP | None = None

    def with_config(self, config: GuidanceConfig) -> GuidedSampler:
        return dataclasses.replace(self, config=config)

    def batch(self, seed: int, batch: int, size: int, target: Target) -> np.ndarray:
        """Batch ``batch`` of a run, guided toward ``target``: uint8 NHWC images."""
        return self._sample(seed, batch, size, target)[0]

    def batches(
        self, n: int, seed: int, batch_size: int, target: Target, progress: bool = False
    ) -> tuple[np.ndarray, list[float]]:
        """``n`` guided samples (uint8 NHWC) and the wall seconds of each batch.

        With ``config.residual``, batch b is guided toward what batches 0..b-1 lack (their
        cells as the ADP predicts them at the last guided step; never the verifier's)."""
        out, seconds = [], []
        counts, done = np.zeros(target.space.n_cells), 0
        batches = range((n + batch_size - 1) // batch_size)
        if progress:
            from tqdm import tqdm

            batches = tqdm(batches, desc=f"sampling ({self.config.mode})", unit="batch")
        for b in batches:
            size = min(batch_size, n - b * batch_size)
            batch_target = target
            if self.config.residual and done:
                residual = residual_target(target.probs, counts, done + size)
                batch_target = Target(target.space, residual)
            t0 = time.perf_counter()
            images, guidance = self._sample(seed, b, size, batch_target)
            out.append(images)
            seconds.append(time.perf_counter() - t0)
            if guidance is not None and guidance.last_probs is not None:
                cells = guidance.last_probs.argmax(1).cpu().numpy()
                counts += np.bincount(cells, minlength=target.space.n_cells)
                done += size
        return np.concatenate(out), seconds

    def _sample(self, seed: int, batch: int, size: int, target: Target):
        rng = np.random.default_rng([seed, batch, 1])
        guidance = make_guidance(self.config, self.adp, target, size, rng)
        x = sample(
            self.backend, size, batch_generator(seed, batch), self.settings, guidance=guidance
        )
        return to_uint8(x), guidance
