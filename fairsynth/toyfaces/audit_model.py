"""Audit the shipped toy DDPM: does it reproduce the reference bias, and are its samples clear?"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fairsynth.data.grid import save_grid
from fairsynth.diffusion.device import resolve_device, torch_dtype
from fairsynth.diffusion.sampling import (
    Backend,
    SamplerSettings,
    batch_generator,
    sample,
    to_uint8,
)
from fairsynth.diffusion.unconditional import load_diffusion_model
from fairsynth.toyfaces import DDPM_DIR, VERIFIER_DIR
from fairsynth.toyfaces.dataset import DEFAULT_BIAS, LABELS_FILE
from fairsynth.toyfaces.render import ATTRIBUTES
from fairsynth.verify.classifier import AttributeClassifier

CONFIDENCE = 0.9


def reference_fractions(reference: str | Path | None) -> tuple[dict[str, dict[str, float]], str]:
    """Class fractions of the reference labels file, or of the default bias if there is none."""
    if reference is not None and (Path(reference) / LABELS_FILE).is_file():
        labels = pd.read_parquet(Path(reference) / LABELS_FILE)
        fr = {
            name: {c: float((labels[name] == c).mean()) for c in classes}
            for name, classes in ATTRIBUTES.items()
        }
        return fr, str(Path(reference) / LABELS_FILE)
    fr = {
        name: dict(zip(ATTRIBUTES[name], map(float, p), strict=True))
        for name, p in DEFAULT_BIAS.items()
    }
    return fr, "default bias (no reference labels file found)"


@dataclass(frozen=True)
class Sampling:
    """How an audit samples: ``n`` samples in batches of ``batch_size``, batch b seeded from
    (seed, b), ``steps`` DDIM steps at ``eta``."""

    n: int = 1000
    seed: int = 0
    steps: int = 50
    batch_size: int = 64
    eta: float = 1.0


def sample_images(
    model: Backend, how: Sampling, progress: bool = False
) -> tuple[np.ndarray, float]:
    """``how.n`` uint8 samples; returns (images, seconds per batch)."""
    n, batch_size = how.n, how.batch_size
    batches = range((n + batch_size - 1) // batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="sampling", unit="batch")
    out, t0 = [], time.perf_counter()
    settings = SamplerSettings(how.steps, how.eta)
    for b in batches:
        size = min(batch_size, n - b * batch_size)
        out.append(to_uint8(sample(model, size, batch_generator(how.seed, b), settings)))
    seconds = (time.perf_counter() - t0) / max(1, len(out))
    return np.concatenate(out), seconds


@dataclass(frozen=True)
class Engine:
    """Which model and verifier an audit loads, and where: ``device`` (auto: CUDA when
    available), ``dtype`` of the UNet."""

    model_path: str | Path = DDPM_DIR
    verifier_path: str | Path = VERIFIER_DIR
    device: str = "auto"
    dtype: str = "float32"


def audit_model(
    how: Sampling = Sampling(),
    engine: Engine = Engine(),
    reference: str | Path | None = "data/reference",
    grid_path: str | Path | None = "data/audit/model_samples.png",
    progress: bool = False,
) -> dict:
    """Unguided samples of the toy DDPM judged by the verifier, against the reference's (or the
    built-in bias's) class fractions."""
    device = resolve_device(engine.device)
    model = load_diffusion_model(engine.model_path, device=device, dtype=torch_dtype(engine.dtype))
    verifier = AttributeClassifier.load(engine.verifier_path, device)
    images, sec_per_batch = sample_images(model, how, progress)
    probs = verifier.predict_proba(images)
    ref, ref_source = reference_fractions(reference)
    attributes = {}
    for name, classes in ATTRIBUTES.items():
        pred = probs[name].argmax(1)
        frac = {c: float((pred == i).mean()) for i, c in enumerate(classes)}
        attributes[name] = {
            "model": frac,
            "reference": ref[name],
            "max_abs_diff": max(abs(frac[c] - ref[name][c]) for c in classes),
        }
    confident = np.all(np.stack([p.max(1) >= CONFIDENCE for p in probs.values()]), axis=0)
    report = {
        "n": how.n,
        "seed": how.seed,
        "ddim_steps": how.steps,
        "ddim_eta": how.eta,
        "model": str(engine.model_path),
        "training": model.extra.get("training"),
        "verifier": str(engine.verifier_path),
        "reference_source": ref_source,
        "attributes": attributes,
        "max_abs_diff": max(a["max_abs_diff"] for a in attributes.values()),
        "confident_fraction": float(confident.mean()),
        "confidence_threshold": CONFIDENCE,
        "seconds_per_batch": round(sec_per_batch, 3),
        "batch_size": how.batch_size,
        "threads": torch.get_num_threads(),
    }
    if grid_path is not None:
        save_grid(images[:64], grid_path)
        report["grid"] = str(grid_path)
    return report


def save_report(report: dict, path: str | Path) -> None:
    """The report as JSON (a DVC metric: only what the inputs decide) and its timings beside it
    (``<file>.run.json``)."""
    from fairsynth.data.runlog import split_run_facts, write_run_record

    stable, facts = split_run_facts(report)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stable, indent=2) + "\n")
    write_run_record(path, facts)


def format_report(report: dict) -> str:
    lines = [
        f"Toy DDPM audit: {report['n']} samples, {report['ddim_steps']} DDIM steps "
        f"(eta {report.get('ddim_eta', 0.0)}), "
        f"seed {report['seed']}",
        f"{'attribute':<12}{'class':<8}{'model':>8}{'reference':>11}{'diff':>8}",
    ]
    for name, a in report["attributes"].items():
        for c, v in a["model"].items():
            r = a["reference"][c]
            lines.append(f"{name:<12}{c:<8}{v:>8.3f}{r:>11.3f}{v - r:>+8.3f}")
    lines.append(f"largest |model - reference|: {report['max_abs_diff']:.3f}")
    lines.append(
        f"confidently classified (max p >= {report['confidence_threshold']} on every attribute): "
        f"{report['confident_fraction']:.3f}"
    )
    if "grid" in report:
        lines.append(f"sample grid: {report['grid']}")
    return "\n".join(lines)
