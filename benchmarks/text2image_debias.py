"""Benchmark: does distribution guidance debias a *trained* text-to-image model, per prompt?

    python benchmarks/text2image_debias.py [--model toyfaces-t2i] [--adp toyfaces-t2i]
        [--n 512] [--batch-size 64] [--steps 25] [--cfg-scale S] [--out ...json]

(``python benchmarks/text2image.py --quality`` runs this.) For each prompt of the model's
``fairsynth.json`` and each target over skin x eyeglasses (uniform, and a non-uniform one),
four modes on the same seeds: ``none``, ``sample`` (per-sample guidance toward assigned cells),
``distribution`` (CFG-aware: the conditional half of the CFG batch only) and
``distribution-both`` (the edit over the whole CFG batch, the official code's way). Reported
per run: FD hard and soft to the target, the confident fraction, a Fréchet distance on the
verifier's features against fresh renders drawn at the target (the other attributes at the
prompt's training bias), and seconds per image with the ratio to unguided. The unguided samples
are shared by the targets. Strengths default to the ADP's calibration (``recommended``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from bars import Bar, add_bar_arguments, bars_json, check_bars, run_settings

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.core.metrics import frechet_distance
from fairsynth.core.plugins import resolve
from fairsynth.diffusion.device import DTYPES, resolve_device, torch_dtype
from fairsynth.diffusion.sampling import SamplerSettings
from fairsynth.diffusion.text2image import PromptedModel, load_text2image
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.config import LOSSES, GuidanceConfig
from fairsynth.guidance.guided import GuidedSampler
from fairsynth.toyfaces import VERIFIER_DIR
from fairsynth.toyfaces.render import ATTRIBUTES, render, sample_params
from fairsynth.verify.classifier import AttributeClassifier
from fairsynth.verify.scoring import confident_by_attribute, judge, score

SPACE = AttributeSpace.from_dict(ATTRIBUTES)
GUIDED = ("skin", "eyeglasses")
TARGETS = {  # name: (target, FD bar)
    "uniform": (Target.uniform(SPACE, GUIDED), 0.08),
    "dark 70%, eyeglasses 40%": (
        Target.from_marginals(SPACE, {"skin": [0.3, 0.7], "eyeglasses": [0.6, 0.4]}),
        0.10,
    ),
}
MODES = ("none", "sample", "distribution", "distribution-both")
QUALITY_DROP_BAR = 0.03  # confident fraction: at most this below unguided
CONFIDENCE = 0.9  # confident: the top class reaches this on every attribute
TIME_RATIO_BAR = 1.10  # distribution guided / unguided seconds per image


def target_renders(target: Target, bias: dict, n: int, seed: int) -> np.ndarray:
    """Fresh renders whose guided attributes follow the target, the others the prompt's bias."""
    rng = np.random.default_rng(seed)
    labels = target.space.cell_labels(rng.choice(target.space.n_cells, size=n, p=target.probs))
    for name, classes in ATTRIBUTES.items():
        if name not in labels:
            p = np.array([bias[name][c] for c in classes])
            labels[name] = rng.choice(len(classes), size=n, p=p / p.sum())
    return render(sample_params(n, rng, labels=labels))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="toyfaces-t2i", help="toy text-to-image folder or name")
    ap.add_argument("--adp", default="toyfaces-t2i", help="ADP folder or name")
    ap.add_argument("--prompts", nargs="+", default=None, help="default: the model's professions")
    ap.add_argument("--n", type=int, default=512, help="samples per prompt, target and mode")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="default: the ADP's")
    ap.add_argument("--eta", type=float, default=None, help="default: the ADP's")
    ap.add_argument("--cfg-scale", type=float, default=None, help="default: the ADP's")
    ap.add_argument("--strength", type=float, default=None, help="distribution strength")
    ap.add_argument("--sample-strength", type=float, default=None)
    ap.add_argument("--max-step", type=float, default=0.5)
    ap.add_argument("--loss", default="chi2", choices=LOSSES, help="distribution divergence")
    ap.add_argument("--window", type=float, nargs=2, default=(0.0, 1.0),
                    help="guided steps, as fractions of the schedule (0: the noisiest)")  # fmt: skip
    ap.add_argument("--residual", action="store_true",
                    help="closed loop: each batch guided toward what the earlier ones lack")  # fmt: skip
    ap.add_argument("--protect", action="store_true", help="guidance.protect (distribution)")
    ap.add_argument("--shift", type=float, default=0.0,
                    help="guidance.shift (distribution): class-mean shift toward the plan")  # fmt: skip
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/text2image_debias.json"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32", choices=list(DTYPES))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)

    device = resolve_device(a.device)
    model_dir, adp_dir = Path(resolve("model", a.model)), Path(resolve("adp", a.adp))
    adp = TrainedADP.load(adp_dir, device).aligned(SPACE)
    meta, rec = adp.meta, adp.meta.get("recommended", {})
    steps = a.steps or int(meta.get("steps", 25))
    eta = float(meta.get("eta", 1.0)) if a.eta is None else a.eta
    cfg_scale = float(meta.get("cfg_scale", 1.0)) if a.cfg_scale is None else a.cfg_scale
    strengths = {
        "sample": a.sample_strength or float(rec.get("sample_strength", 100.0)),
        "distribution": a.strength or float(rec.get("distribution_strength", 100.0)),
    }
    strengths["distribution-both"] = strengths["distribution"]
    bias = json.loads((model_dir / "fairsynth.json").read_text())["prompts"]
    prompts = a.prompts or [p for p in bias if "face" not in p][:4]
    base = load_text2image(model_dir, device=device, dtype=torch_dtype(a.dtype))
    verifier = AttributeClassifier.load(VERIFIER_DIR)
    settings = SamplerSettings(steps=steps, eta=eta, layer=str(meta.get("layer", "mid_block")))

    def run(prompt: str, k: int, mode: str, target: Target) -> dict:
        halves = "both" if mode == "distribution-both" else "conditional"
        backend = PromptedModel(base, prompt, None, cfg_scale, guide_halves=halves)
        guide = "distribution" if mode.startswith("distribution") else mode
        loss = a.loss if guide == "distribution" else "chi2"
        config = GuidanceConfig(
            mode=guide,
            loss=loss,
            strength=strengths.get(mode, 0.0),
            max_step=a.max_step,
            residual=a.residual and guide != "none",
            window=tuple(a.window),
            protect=a.protect and guide == "distribution",
            shift=a.shift if guide == "distribution" else 0.0,
        )
        sampler = GuidedSampler(backend, settings, config, adp)
        images, seconds = sampler.batches(a.n, a.seed + 1000 * k, a.batch_size, target)
        return {"images": images, "seconds_per_image": float(np.median(seconds)) / a.batch_size}

    rows, t_start = [], time.perf_counter()
    for k, prompt in enumerate(prompts):
        unguided = None
        for tname, (target, fd_bar) in TARGETS.items():
            real = verifier.features(target_renders(target, bias[prompt], a.n, 10_000 + k))
            for mode in a.modes:
                if mode == "none" and unguided is not None:
                    out = unguided
                else:
                    out = run(prompt, k, mode, target)
                    unguided = out if mode == "none" else unguided
                verdict = judge(verifier, out["images"])
                r = score(verifier, out["images"], target, CONFIDENCE, verdict)
                rows.append({
                    "prompt": prompt, "target": tname, "mode": mode, "fd_bar": fd_bar,
                    "strength": strengths.get(mode, 0.0), "fd_hard": r["fd_hard"],
                    "fd_soft": r["fd_soft"], "confident_fraction": r["confident_fraction"],
                    "frechet": frechet_distance(verifier.features(out["images"]), real),
                    "seconds_per_image": out["seconds_per_image"],
                    "per_attribute": r["per_attribute"],
                    # which attribute the unclear samples are unclear on
                    "confident_by_attribute": confident_by_attribute(verdict, CONFIDENCE),
                })  # fmt: skip
                print(f"{prompt!r:24} {tname:26} {mode:18} FD {r['fd_hard']:.3f} "
                      f"(soft {r['fd_soft']:.3f}) confident {r['confident_fraction']:.3f} "
                      f"Fréchet {rows[-1]['frechet']:7.2f} confident by attribute "
                      + " ".join(f"{k} {v:.3f}" for k, v in rows[-1]["confident_by_attribute"].items()),
                      flush=True)  # fmt: skip

    def get(prompt, tname, mode):
        return next(
            r for r in rows if (r["prompt"], r["target"], r["mode"]) == (prompt, tname, mode)
        )

    bars = []
    for prompt in prompts:
        for tname, (_, fd_bar) in TARGETS.items():
            none, dist = get(prompt, tname, "none"), get(prompt, tname, "distribution")
            label = f"{prompt} / {tname}"
            bars.append(Bar(f"{label}: FD, distribution", dist["fd_hard"], "<=", fd_bar))
            drop = none["confident_fraction"] - dist["confident_fraction"]
            bars.append(Bar(f"{label}: confident drop", drop, "<=", QUALITY_DROP_BAR))
            if "sample" in a.modes:
                smp = get(prompt, tname, "sample")
                bars.append(Bar(f"{label}: FD distribution - sample", dist["fd_hard"] - smp["fd_hard"],
                                "<=", 0.0))  # fmt: skip
            if "distribution-both" in a.modes:
                both = get(prompt, tname, "distribution-both")
                bars.append(Bar(f"{label}: FD conditional - both halves",
                                dist["fd_hard"] - both["fd_hard"], "<=", 0.0))  # fmt: skip
    t_none = np.mean([r["seconds_per_image"] for r in rows if r["mode"] == "none"])
    t_dist = np.mean([r["seconds_per_image"] for r in rows if r["mode"] == "distribution"])
    bars.append(Bar("guided / unguided seconds per image", t_dist / t_none, "<=", TIME_RATIO_BAR))
    result = {
        "model": str(model_dir),
        "adp": str(adp_dir),
        "rows": rows,
        "guided_over_unguided": float(t_dist / t_none),
        "bars": bars_json(bars),
        "wall_seconds": round(time.perf_counter() - t_start, 1),
        "settings": run_settings(
            n=a.n, batch_size=a.batch_size, steps=steps, eta=eta, cfg_scale=cfg_scale,
            strengths=strengths, loss=a.loss, residual=a.residual, protect=a.protect, shift=a.shift, window=a.window, max_step=a.max_step, layer=settings.layer, seed=a.seed, prompts=prompts,
            targets={k: v[0].probs.round(4).tolist() for k, v in TARGETS.items()},
        ),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    sys.exit(main())
