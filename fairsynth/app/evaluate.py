"""Sample with a guidance configuration, judge with the verifier, report against the target;
or sweep guidance strengths that way (``calibrate_from_params``)."""

from __future__ import annotations

import numpy as np
import torch

from fairsynth.app.calibrate import Sweep, calibrate_strength, geometric, guidance_label
from fairsynth.app.config import Params, as_dict
from fairsynth.app.resolve import sampler_settings
from fairsynth.app.runspec import assemble
from fairsynth.verify.scoring import score


def evaluate(params: Params, n: int, progress: bool = False, prompt: int = 0) -> dict:
    """Text-to-image: the ``prompt``-th configured prompt, with its own target."""
    jobs = params.jobs()
    if not 0 <= prompt < len(jobs):
        raise ValueError(f"prompt index {prompt} out of range (0..{len(jobs) - 1})")
    target = jobs[prompt][1]
    config = params.guidance.to_config()
    parts = assemble(params)
    sampler = parts.samplers[prompt]
    try:
        images, seconds = sampler.batches(
            n, params.seed, params.guidance.batch_size, target, progress
        )
        report = score(parts.verifier, images, target, params.verify.confidence)
    finally:
        parts.verifier.close()
    report.update(
        {
            "mode": config.mode,
            "guidance": as_dict(params.guidance),
            "steps": params.model.steps,
            "batch_size": params.guidance.batch_size,
            "seconds_per_batch": float(np.mean(seconds)),
            "threads": torch.get_num_threads(),
            "device": parts.device,
            "dtype": params.model.dtype,
            **getattr(sampler.backend, "provenance", {}),
        }
    )
    return report


def calibration_sweep(params: Params, mode: str = "distribution", **how) -> Sweep:
    """A sweep that guides exactly as these params generate (every guidance setting; the
    class-mean shift for distribution guidance only), on their sampler, batch size and
    verifier confidence. ``how``: ``strengths``, ``n``, ``family``, ``max_quality_drop``."""
    g = params.guidance
    guidance = g.to_config(mode=mode, shift=float(g.shift) if mode == "distribution" else 0.0)
    strengths = how.pop("strengths", None) or geometric(10.0, 1000.0, 7)
    return Sweep(
        guidance, tuple(float(s) for s in strengths), settings=sampler_settings(params),
        batch_size=g.batch_size, confidence=params.verify.confidence, **how,
    )  # fmt: skip


def calibrate_from_params(
    params: Params, sweep: Sweep, progress: bool = False
) -> dict:
    """Sweep the configured ADP (no training) on its model and verifier; text-to-image: on the
    first prompt, at the configured CFG scale."""
    parts = assemble(params, sweep.guidance)
    try:
        return calibrate_strength(parts.samplers[0], parts.verifier, sweep, progress)
    finally:
        parts.verifier.close()


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
