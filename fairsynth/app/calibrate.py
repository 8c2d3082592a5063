"""Choose a guidance strength for an ADP: a short sweep on calibration targets.

The default calibration target is uniform over the cells of *all* the ADP's attributes jointly,
a demanding target that is none of the benchmark's, so the chosen strength is not tuned to them.
``family=True`` sweeps a family instead: that uniform target plus, per attribute, the model's
own class fractions reversed (its rarest class gets its commonest class's share), measured on
the unguided samples of the sweep itself: targets near and far from what the model draws.
The rule: among strengths whose confident fraction stays within ``max_quality_drop`` of
unguided sampling on every target, take the one with the lowest FD (hard, verifier) on the
worst target.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fairsynth.app.config import Params
from fairsynth.app.resolve import sampler_settings
from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.diffusion.sampling import SamplerSettings
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.guidance.guided import GuidedSampler
from fairsynth.verify import Verifier
from fairsynth.verify.classifier import AttributeClassifier
from fairsynth.verify.scoring import judge, score


@dataclass(frozen=True)
class Sweep:
    """How a strength sweep samples and judges. ``guidance``: every guidance setting the sweep
    keeps (all but the strength, which it sweeps over ``strengths``), so a calibration is made
    exactly as generation guides; ``confidence``: the verifier's, as generation accepts."""

    guidance: GuidanceConfig
    strengths: tuple[float, ...]
    settings: SamplerSettings = SamplerSettings(steps=50, eta=1.0)
    n: int = 256
    seed: int = 4242
    batch_size: int = 64
    confidence: float = 0.9
    max_quality_drop: float = 0.03
    target: Target | None = None
    family: bool = False


def calibrate_strength(
    sampler: GuidedSampler,
    verifier: Verifier | AttributeClassifier,
    sweep: Sweep,
    progress: bool = False,
) -> dict:
    """Unguided samples, then one guided run per strength and target, judged by ``verifier``;
    the rows, and the strength the rule chooses. ``sampler``: the model and the ADP (its
    settings and guidance are the sweep's)."""
    w, conf, adp = sweep, sweep.confidence, sampler.adp
    sampler = dataclasses.replace(sampler, settings=w.settings)
    uniform = Target.uniform(adp.space, list(adp.space.names))
    unguided = sampler.with_config(dataclasses.replace(w.guidance, mode="none", strength=0.0))
    images, _ = unguided.batches(w.n, w.seed, w.batch_size, uniform)
    first = "uniform over " + " x ".join(adp.space.names) if w.target is None else "given target"
    targets = {first: w.target or uniform}
    verdict = judge(verifier, images)  # once: the unguided samples serve every target
    if w.family:
        seen = score(verifier, images, uniform, conf, verdict)
        targets.update(reversed_targets(adp.space, seen))
    base = {name: score(verifier, images, t, conf, verdict) for name, t in targets.items()}
    rows = [_row(0.0, base)]
    for s in w.strengths:
        cfg = dataclasses.replace(w.guidance, strength=float(s))
        guided = sampler.with_config(cfg)
        scores = {}
        for name, t in targets.items():
            images, _ = guided.batches(w.n, w.seed, w.batch_size, t)
            scores[name] = score(verifier, images, t, conf)
        rows.append(_row(float(s), scores))
        if progress:
            r = rows[-1]
            print(f"calibrate {cfg.mode}: strength {s:g} worst FD {r['fd_hard']:.3f} "
                  f"worst conf {r['confident_fraction']:.3f}", flush=True)  # fmt: skip
    g = w.guidance
    return {
        "mode": g.mode,
        "target": " | ".join(targets),
        "targets": {name: t.probs.round(6).tolist() for name, t in targets.items()},
        "rows": rows,
        "chosen": choose_strength(rows, w.max_quality_drop),
        "n": w.n,
        "loss": g.loss,
        "max_step": g.max_step,
        "protect": g.protect,
        "shift": g.shift,
        "temperature": g.temperature,
        "window": list(g.window),
        "confidence": conf,
        "max_quality_drop": w.max_quality_drop,
    }


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


def guidance_label(result: dict) -> str:
    """How a sweep guided: ``loss ot, protect, shift 1`` (temperature and window where they
    are not the defaults)."""
    label = f"loss {result['loss']}" + (", protect" if result.get("protect") else "")
    label += f", shift {result['shift']:g}" if result.get("shift") else ""
    if result.get("temperature", 1.0) != 1.0:
        label += f", temperature {result['temperature']:g}"
    if tuple(result.get("window", (0.0, 1.0))) != (0.0, 1.0):
        label += ", window [{:g}, {:g}]".format(*result["window"])
    return label


def calibration_key(result: dict) -> str:
    """Where a sweep is filed in the ADP's ``adp.json``: by mode, loss, protect and shift."""
    return f"{result['mode']}, {guidance_label(result)}"


def record_calibration(adp_folder: str | Path, result: dict) -> str:
    """File a family sweep in the ADP folder (``calibration_family``, by ``calibration_key``),
    so the folder says which settings were tried across near and far targets and which held.
    Written as the ADP is saved: a crash leaves the old folder or the new one."""
    adp = TrainedADP.load(adp_folder)
    key = calibration_key(result)
    adp.meta.setdefault("calibration_family", {})[key] = result
    adp.save(adp_folder)
    return key


def reversed_targets(space: AttributeSpace, unguided: dict) -> dict[str, Target]:
    """Per attribute, the unguided class fractions reversed by rank (ties keep class order)."""
    out = {}
    for name, classes in space.attributes:
        seen = np.array([unguided["per_attribute"][name][c] for c in classes]) + 1e-3
        seen = seen / seen.sum()
        order = np.argsort(-seen, kind="stable")  # commonest first
        flipped = np.empty_like(seen)
        flipped[order] = seen[order[::-1]]
        label = ", ".join(f"{c} {v:.2f}" for c, v in zip(classes, flipped, strict=True))
        out[f"{name} reversed ({label})"] = Target.from_marginals(space, {name: flipped})
    return out


def _row(strength: float, scores: dict[str, dict]) -> dict:
    """One strength: the worst FD and confident fraction over the targets, and each target's."""
    return {
        "strength": strength,
        "fd_hard": max(r["fd_hard"] for r in scores.values()),
        "confident_fraction": min(r["confident_fraction"] for r in scores.values()),
        "by_target": {
            name: {"fd_hard": r["fd_hard"], "confident_fraction": r["confident_fraction"]}
            for name, r in scores.items()
        },
    }


def choose_strength(rows: list[dict], max_quality_drop: float) -> float:
    """``rows[0]`` is unguided. Among the others whose confident fraction stays within
    ``max_quality_drop`` of it (on every target, where rows carry ``by_target``), the strength
    with the lowest (worst-target) FD; if none does, the gentlest (smallest) strength: quality
    is never traded for balance beyond the bound."""

    def keeps_quality(row: dict) -> bool:
        if "by_target" not in row:
            return row["confident_fraction"] >= rows[0]["confident_fraction"] - max_quality_drop
        base = rows[0]["by_target"]
        return all(
            r["confident_fraction"] >= base[name]["confident_fraction"] - max_quality_drop
            for name, r in row["by_target"].items()
        )

    ok = [r for r in rows[1:] if keeps_quality(r)]
    if not ok:
        return min(r["strength"] for r in rows[1:])
    return min(ok, key=lambda r: r["fd_hard"])["strength"]


def geometric(lo: float, hi: float, k: int) -> list[float]:
    return [float(x) for x in np.geomspace(lo, hi, k)]
