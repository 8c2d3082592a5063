"""Choose a guidance strength for an ADP: a short sweep on a calibration target.

The calibration target is uniform over the cells of *all* the ADP's attributes jointly, a
demanding target that is none of the benchmark's, so the chosen strength is not tuned to them.
The rule: among strengths whose confident fraction stays within ``max_quality_drop`` of
unguided sampling, take the one with the lowest FD (hard, verifier).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from fairsynth.core.attributes import Target
from fairsynth.diffusion.sampling import Backend, SamplerSettings
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.guidance.guided import generate_batches
from fairsynth.verify import Verifier
from fairsynth.verify.classifier import AttributeClassifier
from fairsynth.verify.scoring import score


def calibrate_strength(
    backend: Backend,
    adp: TrainedADP,
    verifier: Verifier | AttributeClassifier,
    mode: str,
    strengths: Sequence[float],
    settings: SamplerSettings = SamplerSettings(steps=50, eta=1.0),
    n: int = 256,
    seed: int = 4242,
    batch_size: int = 64,
    loss: str = "chi2",
    max_quality_drop: float = 0.03,
    target: Target | None = None,
    progress: bool = False,
    max_step: float = 0.5,
) -> dict:
    target = target or Target.uniform(adp.space, list(adp.space.names))
    rows = []
    for s in [0.0, *strengths]:
        cfg = GuidanceConfig(
            mode=mode if s > 0 else "none", loss=loss, strength=float(s), max_step=max_step
        )
        images, _ = generate_batches(backend, settings, n, seed, batch_size, target, cfg, adp)
        r = score(verifier, images, target, 0.9)
        rows.append(
            {
                "strength": float(s),
                "fd_hard": r["fd_hard"],
                "confident_fraction": r["confident_fraction"],
            }
        )
        if progress:
            print(
                f"calibrate {mode}: strength {s:g} FD {r['fd_hard']:.3f} conf {r['confident_fraction']:.3f}",
                flush=True,
            )
    return {
        "mode": mode,
        "target": "uniform over " + " x ".join(adp.space.names),
        "rows": rows,
        "chosen": choose_strength(rows, max_quality_drop),
        "n": n,
        "loss": loss,
        "max_step": max_step,
    }


def choose_strength(rows: list[dict], max_quality_drop: float) -> float:
    """``rows[0]`` is unguided. Among the others whose confident fraction stays within
    ``max_quality_drop`` of it, the strength with the lowest FD; if none does, the gentlest
    (smallest) strength: quality is never traded for balance beyond the bound."""
    base = rows[0]["confident_fraction"]
    ok = [r for r in rows[1:] if r["confident_fraction"] >= base - max_quality_drop]
    if not ok:
        return min(r["strength"] for r in rows[1:])
    return min(ok, key=lambda r: r["fd_hard"])["strength"]


def geometric(lo: float, hi: float, k: int) -> list[float]:
    return [float(x) for x in np.geomspace(lo, hi, k)]
