"""Sample with a guidance configuration, judge with the verifier, report against the target;
or sweep guidance strengths that way (``calibrate_from_params``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from fairsynth.app.calibrate import calibrate_strength, geometric, guidance_label
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


def calibrate_from_params(
    params: Params, mode: str = "distribution", strengths: Sequence[float] | None = None, n: int = 256,
    family: bool = False, progress: bool = False, max_quality_drop: float = 0.03,
) -> dict:  # fmt: skip
    """Sweep the configured ADP (no training) on its model, verifier and sampler settings."""
    from fairsynth.app.resolve import (
        adp_folder,
        model_spec,
        prompt_spec,
        sampler_settings,
        verifier_spec,
    )
    from fairsynth.diffusion.backends import bind_prompt, load_model
    from fairsynth.diffusion.device import resolve_device

    spec = model_spec(params)
    device = resolve_device(spec.device)
    prompt = params.jobs()[0][0]  # text-to-image: the first prompt, at the configured CFG scale
    model = bind_prompt(load_model(spec), prompt_spec(prompt), params.model.cfg_scale)
    adp = (
        TrainedADP.load(adp_folder(params), device)
        .aligned(params.attribute_space())
        .check_layer(params.model.layer)
    )
    verifier = load_verifier(verifier_spec(params), params.attribute_space(), device)
    try:
        return calibrate_strength(
            model, adp, verifier, mode, strengths or geometric(10.0, 1000.0, 7),
            settings=sampler_settings(params), n=n, batch_size=params.guidance.batch_size,
            loss=params.guidance.loss, progress=progress, max_step=params.guidance.max_step,
            family=family, protect=params.guidance.protect,
            shift=params.guidance.shift if mode == "distribution" else 0.0,
            max_quality_drop=max_quality_drop,
        )  # fmt: skip
    finally:
        verifier.close()


def format_calibration(result: dict) -> str:
    names = list(result["rows"][0]["by_target"])
    how = guidance_label(result)
    lines = [f"{result['mode']} guidance ({how}), n {result['n']} per target; targets:"]
    lines += [f"  [{i}] {name}" for i, name in enumerate(names)]
    head = "strength  worst FD  worst conf  " + "  ".join(
        f"[{i}] FD/conf" for i in range(len(names))
    )
    lines.append(head)
    for r in result["rows"]:
        cells = "  ".join(
            f"{r['by_target'][k]['fd_hard']:.3f}/{r['by_target'][k]['confident_fraction']:.3f}"
            for k in names
        )
        lines.append(
            f"{r['strength']:8g}  {r['fd_hard']:8.3f}  {r['confident_fraction']:10.3f}  {cells}"
        )
    lines.append(
        f"chosen: {result['chosen']:g} (confident fraction within "
        f"{result['max_quality_drop']:g} of unguided on every target)"
    )
    return "\n".join(lines)
