"""Sample with a guidance configuration, judge with the verifier, report against the target."""

from __future__ import annotations

import numpy as np
import torch

from fairsynth.app.config import Params
from fairsynth.core.attributes import Target
from fairsynth.core.metrics import evaluate_against_target
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.guided import generate_batches
from fairsynth.toyfaces import resolve
from fairsynth.toyfaces.classifiers import AttributeClassifier
from fairsynth.verify import Verdict, Verifier, load_verifier


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
    from fairsynth.diffusion.backends import bind_prompt, load_model

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
