"""Sample with a guidance configuration, judge with the verifier, report against the target."""

from __future__ import annotations

import numpy as np
import torch

from fairsynth.app.config import Params, as_dict
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.guided import generate_batches
from fairsynth.verify import load_verifier
from fairsynth.verify.scoring import score


def evaluate(params: Params, n: int, progress: bool = False, prompt: int = 0) -> dict:
    """Text-to-image: the ``prompt``-th configured prompt, with its own target."""
    from fairsynth.app.resolve import (
        adp_folder,
        model_spec,
        prompt_spec,
        sampler_settings,
        verifier_spec,
    )
    from fairsynth.diffusion.backends import bind_prompt, load_model
    from fairsynth.diffusion.device import resolve_device

    jobs = params.jobs()
    if not 0 <= prompt < len(jobs):
        raise ValueError(f"prompt index {prompt} out of range (0..{len(jobs) - 1})")
    prompt_config, target, _ = jobs[prompt]
    spec = model_spec(params)
    device = resolve_device(spec.device)  # "auto" stays in a spec for a remote cluster
    model = bind_prompt(load_model(spec), prompt_spec(prompt_config), params.model.cfg_scale)
    config = params.guidance.to_config()
    adp = (
        TrainedADP.load(adp_folder(params), device)
        .aligned(params.attribute_space())
        .check_layer(params.model.layer)
        if config.mode != "none"
        else None
    )
    verifier = load_verifier(verifier_spec(params), params.attribute_space(), device)
    images, seconds = generate_batches(
        model, sampler_settings(params), n, params.seed, params.guidance.batch_size, target,
        config, adp, progress,
    )  # fmt: skip
    try:
        report = score(verifier, images, target, params.verify.confidence)
    finally:
        verifier.close()
    report.update(
        {
            "mode": config.mode,
            "guidance": as_dict(params.guidance),
            "steps": params.model.steps,
            "batch_size": params.guidance.batch_size,
            "seconds_per_batch": float(np.mean(seconds)),
            "threads": torch.get_num_threads(),
            "device": device,
            "dtype": spec.dtype,
            **getattr(model, "provenance", {}),
        }
    )
    return report
