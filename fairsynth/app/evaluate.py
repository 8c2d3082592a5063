"""Sample with a guidance configuration, judge with the verifier, report against the target;
or sweep guidance strengths that way (``calibrate_from_params``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from fairsynth.app.assemble import assemble
from fairsynth.app.calibrate import Sweep, calibrate_strength, calibration_sweep, guidance_label
from fairsynth.app.config import Params, as_dict
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


def calibrate_from_params(params: Params, sweep: Sweep, progress: bool = False) -> dict:
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


def evaluate_command(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params

    report = evaluate(load_params(a.params), a.n, progress=not a.json)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"mode {report['mode']}: FD hard {report['fd_hard']:.4f}, soft {report['fd_soft']:.4f}"
        )
        for cell, t, h in zip(report["cells"], report["target"], report["hard"], strict=True):
            print(f"  {cell:<24} target {t:.3f}  got {h:.3f}")
        print(
            f"confident fraction {report['confident_fraction']:.3f}, "
            f"{report['seconds_per_batch']:.2f} s/batch"
        )
    return 0


def calibrate_command(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params

    params = load_params(a.params)
    if a.record and not a.family:
        print("fairsynth calibrate: --record files a family sweep; add --family", file=sys.stderr)
        return 2
    sweep = calibration_sweep(params, a.mode, strengths=a.strengths, n=a.n, family=a.family,
                              max_quality_drop=a.max_quality_drop)  # fmt: skip
    result = calibrate_from_params(params, sweep, progress=not a.json)
    print(json.dumps(result, indent=2) if a.json else format_calibration(result))
    if a.record:
        from fairsynth.app.calibrate import record_calibration
        from fairsynth.app.resolve import adp_folder

        folder = adp_folder(params)
        key = record_calibration(folder, result)
        print(
            f"recorded in {Path(folder) / 'adp.json'}: calibration_family[{key!r}]", file=sys.stderr
        )
    return 0
