"""Audit the shipped toy text-to-image model per prompt: does each prompt draw its training
bias (the fractions its faces were rendered with), are its samples clear, and how do the
fractions move with the classifier-free-guidance scale (CFG is known to amplify majorities)?"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from fairsynth.data.grid import save_grid
from fairsynth.diffusion.text2image import PromptedModel, load_text2image
from fairsynth.toyfaces import T2I_DIR
from fairsynth.toyfaces.audit_model import CONFIDENCE, Engine, Sampling, sample_images
from fairsynth.toyfaces.render import ATTRIBUTES
from fairsynth.verify.classifier import AttributeClassifier

FRACTION_BAR = 0.07  # |model - training| per class, at the preset's CFG scale
CONFIDENT_BAR = 0.95


def training_bias(model_path: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """Per prompt, the class fractions its training faces were rendered with (the folder's
    ``fairsynth.json``)."""
    meta = Path(model_path) / "fairsynth.json"
    if not meta.is_file():
        raise FileNotFoundError(f"{meta} is missing: not a toy text-to-image folder")
    return json.loads(meta.read_text())["prompts"]


def judge_fractions(verifier: AttributeClassifier, images: np.ndarray, expected: dict) -> dict:
    """Verifier class fractions next to the expected ones, and the confident fraction."""
    probs = verifier.predict_proba(images)
    row: dict = {"attributes": {}}
    for name, classes in ATTRIBUTES.items():
        pred = probs[name].argmax(1)
        frac = {c: round(float((pred == i).mean()), 4) for i, c in enumerate(classes)}
        row["attributes"][name] = frac
    row["max_abs_diff"] = round(
        max(
            abs(row["attributes"][a][c] - expected[a][c])
            for a, classes in ATTRIBUTES.items()
            for c in classes
        ),
        4,
    )
    confident = np.all(np.stack([p.max(1) >= CONFIDENCE for p in probs.values()]), axis=0)
    row["confident_fraction"] = round(float(confident.mean()), 4)
    return row


def audit_text2image(
    how: Sampling = Sampling(n=512, steps=25),
    cfg_scales: tuple[float, ...] = (1.0, 3.0, 7.5),
    preset_cfg: float | None = None,
    engine: Engine = Engine(model_path=T2I_DIR),
    progress: bool = False,
    grid_dir: str | Path | None = None,
) -> dict:
    """``n`` samples per prompt and CFG scale; prompt k, batch b seeded from (seed + 1000 k, b),
    the same noise at every scale. The bars apply at ``preset_cfg`` (default: the first scale)."""
    model_path, verifier_path = engine.model_path, engine.verifier_path
    n, seed, steps, eta, batch_size = how.n, how.seed, how.steps, how.eta, how.batch_size
    preset_cfg = cfg_scales[0] if preset_cfg is None else preset_cfg
    scales = list(dict.fromkeys([preset_cfg, *cfg_scales]))
    base = load_text2image(model_path)
    verifier = AttributeClassifier.load(verifier_path)
    expected = training_bias(model_path)
    prompts: dict[str, dict] = {}
    for k, (prompt, bias) in enumerate(expected.items()):
        by_cfg = {}
        for cfg in scales:
            backend = PromptedModel(base, prompt, None, cfg)
            prompt_how = dataclasses.replace(how, seed=seed + 1000 * k)
            images, _ = sample_images(backend, prompt_how, progress)
            by_cfg[f"{cfg:g}"] = judge_fractions(verifier, images, bias)
            if grid_dir is not None and cfg == preset_cfg:
                save_grid(images[:64], Path(grid_dir) / f"prompt{k}.png")
        at_preset = by_cfg[f"{preset_cfg:g}"]
        prompts[prompt] = {
            "training": bias,
            "by_cfg": by_cfg,
            "passes": bool(
                at_preset["max_abs_diff"] <= FRACTION_BAR
                and at_preset["confident_fraction"] >= CONFIDENT_BAR
            ),
        }
    return {
        "model": str(model_path),
        "verifier": str(verifier_path),
        "n": n,
        "seed": seed,
        "ddim_steps": steps,
        "ddim_eta": eta,
        "batch_size": batch_size,
        "preset_cfg": preset_cfg,
        "cfg_scales": [float(s) for s in scales],
        "bars": {"max_abs_diff": FRACTION_BAR, "confident_fraction": CONFIDENT_BAR},
        "prompts": prompts,
        "all_pass": all(p["passes"] for p in prompts.values()),
        "threads": torch.get_num_threads(),
    }


def format_t2i_report(report: dict) -> str:
    scales = [f"{s:g}" for s in report["cfg_scales"]]
    lines = [
        f"Toy text-to-image audit: {report['n']} samples per prompt and CFG scale, "
        f"{report['ddim_steps']} DDIM steps (eta {report['ddim_eta']}), seed {report['seed']}; "
        f"bars at CFG {report['preset_cfg']:g}: |diff| <= {report['bars']['max_abs_diff']}, "
        f"confident >= {report['bars']['confident_fraction']}",
    ]
    for prompt, p in report["prompts"].items():
        lines.append(f"\n{prompt!r}  ({'passes' if p['passes'] else 'FAILS'})")
        head = "".join(f"{'cfg ' + s:>9}" for s in scales)
        lines.append(f"  {'attribute':<12}{'class':<8}{'training':>9}{head}")
        for name, classes in p["training"].items():
            for c, t in classes.items():
                vals = "".join(f"{p['by_cfg'][s]['attributes'][name][c]:>9.3f}" for s in scales)
                lines.append(f"  {name:<12}{c:<8}{t:>9.3f}{vals}")
        diffs = "".join(f"{p['by_cfg'][s]['max_abs_diff']:>9.3f}" for s in scales)
        conf = "".join(f"{p['by_cfg'][s]['confident_fraction']:>9.3f}" for s in scales)
        lines.append(f"  {'largest |diff|':<29}{diffs}")
        lines.append(f"  {'confident':<29}{conf}")
    return "\n".join(lines)
