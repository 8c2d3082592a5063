"""Guided sampling as runs use it: a batch's guidance built from (target, config, ADP) and its
noise and cell assignment derived from (seed, batch) only; several batches, optionally each
guided toward what the earlier ones lack (closed loop on the ADP's own count)."""

from __future__ import annotations

import time

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


def generate_batches(
    backend: Backend,
    settings: SamplerSettings,
    n: int,
    seed: int,
    batch_size: int,
    target: Target,
    config: GuidanceConfig,
    adp: TrainedADP | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, list[float]]:
    """``n`` guided samples (uint8 NHWC) and the wall seconds of each batch.

    With ``config.residual``, batch b is guided toward what batches 0..b-1 lack (their cells
    as the ADP predicts them at the last guided step; never the verifier's judgement)."""
    out, seconds = [], []
    counts, done = np.zeros(target.space.n_cells), 0
    batches = range((n + batch_size - 1) // batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc=f"sampling ({config.mode})", unit="batch")
    for b in batches:
        size = min(batch_size, n - b * batch_size)
        batch_target = target
        if config.residual and done:
            batch_target = Target(target.space, residual_target(target.probs, counts, done + size))
        t0 = time.perf_counter()
        images, guidance = _sample(backend, settings, seed, b, size, batch_target, config, adp)
        out.append(images)
        seconds.append(time.perf_counter() - t0)
        if guidance is not None and guidance.last_probs is not None:
            cells = guidance.last_probs.argmax(1).cpu().numpy()
            counts += np.bincount(cells, minlength=target.space.n_cells)
            done += size
    return np.concatenate(out), seconds


def sample_batch(
    backend: Backend,
    settings: SamplerSettings,
    seed: int,
    batch: int,
    size: int,
    target: Target,
    config: GuidanceConfig,
    adp: TrainedADP | None = None,
) -> np.ndarray:
    """Batch ``batch`` of a run: guidance toward ``target``, noise and cell assignment derived
    from (seed, batch) only. Returns uint8 NHWC images."""
    return _sample(backend, settings, seed, batch, size, target, config, adp)[0]


def _sample(backend, settings, seed, batch, size, target, config, adp):
    guidance = make_guidance(config, adp, target, size, np.random.default_rng([seed, batch, 1]))
    x = sample(backend, size, batch_generator(seed, batch), settings, guidance=guidance)
    return to_uint8(x), guidance
