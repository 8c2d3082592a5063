"""TODO docstring"""

from __future__ import annotations

import time

import numpy as np

from fairsynth.core.attributes import Target
from fairsynth.core.quotas import residual_target
from fairsynth.diffusion.sampling import batch_generator, to_uint8
from fairsynth.diffusion.unconditional import DiffusionModel
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
    model: DiffusionModel,
    adp: TrainedADP | None,
    target: Target,
    config: GuidanceConfig,
    n: int,
    seed: int,
    batch_size: int,
    steps: int,
    eta: float = 0.0,
    layer: str = "mid_block",
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
        images, guidance = _sample(
            model, adp, batch_target, config, seed, b, size, steps, eta, layer
        )
        out.append(images)
        seconds.append(time.perf_counter() - t0)
        if guidance is not None and guidance.last_probs is not None:
            cells = guidance.last_probs.argmax(1).cpu().numpy()
            counts += np.bincount(cells, minlength=target.space.n_cells)
            done += size
    return np.concatenate(out), seconds


def sample_batch(
    model: DiffusionModel,
    adp: TrainedADP | None,
    target: Target,
    config: GuidanceConfig,
    seed: int,
    batch: int,
    size: int,
    steps: int,
    eta: float = 0.0,
    layer: str = "mid_block",
) -> np.ndarray:
    """Batch ``batch`` of a run: guidance toward ``target``, noise and cell assignment derived
    from (seed, batch) only. Returns uint8 NHWC images."""
    return _sample(model, adp, target, config, seed, batch, size, steps, eta, layer)[0]


def _sample(model, adp, target, config, seed, batch, size, steps, eta, layer):
    guidance = make_guidance(config, adp, target, size, np.random.default_rng([seed, batch, 1]))
    x = model.sample(
        size, batch_generator(seed, batch), steps=steps, eta=eta, guidance=guidance, layer=layer
    )
    return to_uint8(x), guidance
