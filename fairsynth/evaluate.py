"""Sample with a guidance configuration, judge with the verifier, report against the target."""

from __future__ import annotations

import time

import numpy as np
import torch

from fairsynth.adp import TrainedADP
from fairsynth.attributes import Target
from fairsynth.config import Params
from fairsynth.diffusion_model import DiffusionModel
from fairsynth.guidance import (
    DistributionGuidance,
    Guidance,
    GuidanceConfig,
    SampleGuidance,
    assign_cells,
)
from fairsynth.metrics import evaluate_against_target
from fairsynth.plan import residual_target
from fairsynth.sampling import batch_generator, to_uint8
from fairsynth.toyfaces import resolve
from fairsynth.toyfaces.classifiers import AttributeClassifier
from fairsynth.verify import Verdict, Verifier, load_verifier


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


def judge(
    verifier: Verifier | AttributeClassifier, images: np.ndarray, target: Target, confidence: float
) -> dict:
    if hasattr(verifier, "verify"):
        verdict = verifier.verify(images)
    else:
        verdict = Verdict(verifier.predict_proba(images))
    probs = verdict.probs
    report = evaluate_against_target({k: probs[k] for k in target.space.names}, target)
    per_attribute = {
        name: {c: float((probs[name].argmax(1) == i).mean()) for i, c in enumerate(classes)}
        for name, classes in verifier.attributes.items()
    }
    conf = np.stack([p.max(1) for p in probs.values()]).min(0)
    report.update(
        {
            "per_attribute": per_attribute,
            "mean_confidence": float(conf.mean()),
            "confident_fraction": float((conf >= confidence).mean()),
            "confidence_threshold": confidence,
            "rejected_fraction": float(np.mean([r is not None for r in verdict.rejects])),
        }
    )
    return report


def evaluate(params: Params, n: int, progress: bool = False, prompt: int = 0) -> dict:
    """Text-to-image: the ``prompt``-th configured prompt, with its own target."""
    from fairsynth.backends import bind_prompt, load_model

    jobs = params.jobs()
    if not 0 <= prompt < len(jobs):
        raise ValueError(f"prompt index {prompt} out of range (0..{len(jobs) - 1})")
    prompt_config, target, _ = jobs[prompt]
    model = bind_prompt(load_model(params.model), prompt_config, params.model.cfg_scale)
    config = params.guidance.to_config()
    adp = (
        TrainedADP.load(resolve("adp", params.adp.path)).aligned(params.attribute_space())
        if config.mode != "none"
        else None
    )
    verifier = load_verifier(params.verify, params.attribute_space())
    images, seconds = generate_batches(
        model, adp, target, config, n, params.seed, params.guidance.batch_size,
        params.model.steps, params.model.eta, params.model.layer, progress,
    )  # fmt: skip
    try:
        report = judge(verifier, images, target, params.verify.confidence)
    finally:
        verifier.close()
    report.update(
        {
            "mode": config.mode,
            "guidance": {**params.guidance.__dict__},
            "steps": params.model.steps,
            "batch_size": params.guidance.batch_size,
            "seconds_per_batch": float(np.mean(seconds)),
            "threads": torch.get_num_threads(),
            **getattr(model, "provenance", {}),
        }
    )
    return report
