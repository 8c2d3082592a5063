"""Benchmark: the truth behind an imperfect verifier, on the toy world.

    python benchmarks/imperfect_verifier.py [--n 512] [--pool 1280]
                                            [--out benchmarks/results/imperfect_verifier.json]

The acceptance verifier is the shipped toy verifier behind a known confusion: it calls a dark
face light with probability 0.35 and a light face dark with 0.05 (decided per image by a hash of
its bytes, so it depends on the true class only, as confusion-matrix correction assumes). Its
confusion is measured the way the audit stage does, on labelled renders. A pool of guided
samples (distribution guidance toward skin 50/50, the shipped ADP) is then accepted in order
until the quotas are met, by the imperfect verifier's labels: once with the plain quotas (the
target as the verifier counts), once with the corrected ones (``verify.correct_quotas``: the
verified fractions whose truth is the target). The shipped accurate verifier re-judges each
published set: that is the truth the estimate and its interval are checked against.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
from bars import Bar, add_bar_arguments, bars_json, check_bars, run_settings

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.core.confusion import Bootstrap, cell_confusion, estimate_truth, verified_target
from fairsynth.core.metrics import fairness_discrepancy
from fairsynth.core.quotas import standalone_quotas
from fairsynth.diffusion.sampling import SamplerSettings
from fairsynth.diffusion.unconditional import load_diffusion_model
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.guidance.guided import GuidedSampler
from fairsynth.toyfaces import ADP_DIR, DDPM_DIR, VERIFIER_DIR
from fairsynth.toyfaces.render import ATTRIBUTES, render, sample_params
from fairsynth.verify.classifier import AttributeClassifier

FLIP = {1: 0.35, 0: 0.05}  # P(called the other class | true class): dark -> light, light -> dark
FD_BAR = 0.05


def true_skin(verifier: AttributeClassifier, images: np.ndarray) -> np.ndarray:
    return verifier.predict_proba(images)["skin"].argmax(1)


def imperfect_skin(truth: np.ndarray, images: np.ndarray) -> np.ndarray:
    """The imperfect verifier's call: the accurate one's, flipped with FLIP[class] per image."""
    u = np.array([int(hashlib.sha256(im.tobytes()).hexdigest()[:8], 16) / 16**8 for im in images])
    flip = u < np.vectorize(FLIP.get)(truth)
    return np.where(flip, 1 - truth, truth)


def fill(called: np.ndarray, quotas: np.ndarray) -> np.ndarray:
    """Indices accepted in pool order until each called cell's quota is met."""
    left, taken = quotas.copy(), []
    for i, c in enumerate(called):
        if left[c] > 0:
            left[c] -= 1
            taken.append(i)
    if left.any():
        raise SystemExit(f"the pool is too small: {left.tolist()} still missing")
    return np.array(taken)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="published samples")
    ap.add_argument("--pool", type=int, default=1280, help="guided samples drawn")
    ap.add_argument("--audit-n", type=int, default=1000, help="labelled renders audited")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/imperfect_verifier.json"))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)

    space = AttributeSpace.from_dict(ATTRIBUTES)
    target = Target.from_marginals(space, {"skin": [0.5, 0.5]})
    verifier = AttributeClassifier.load(VERIFIER_DIR)
    rng = np.random.default_rng(a.seed)
    labels = {"skin": rng.integers(0, 2, a.audit_n)}
    audit_images = render(sample_params(a.audit_n, rng, labels=labels))
    called = imperfect_skin(labels["skin"], audit_images)
    audit = np.zeros((2, 2), dtype=int)
    np.add.at(audit, (labels["skin"], called), 1)
    print(f"audit of the imperfect verifier on {a.audit_n} labelled renders: {audit.tolist()}")

    model = load_diffusion_model(DDPM_DIR)
    adp = TrainedADP.load(ADP_DIR)
    strength = adp.meta["recommended"]["distribution_strength"]
    settings = SamplerSettings(steps=50, eta=1.0, layer=adp.meta.get("layer", "mid_block"))
    config = GuidanceConfig(strength=strength, loss="chi2", shift=0.0)
    sampler = GuidedSampler(model, settings, config, adp)
    images, _ = sampler.batches(a.pool, a.seed, 64, target, progress=True)
    truth = true_skin(verifier, images)
    pool_called = imperfect_skin(truth, images)

    corrected = verified_target(target.probs, cell_confusion([audit]))
    rows = {}
    for name, probs in (("plain quotas", target.probs), ("corrected quotas", corrected)):
        quotas = standalone_quotas(probs, a.n)
        taken = fill(pool_called, quotas)
        counts = np.bincount(pool_called[taken], minlength=2)
        true_frac = np.bincount(truth[taken], minlength=2) / len(taken)
        judged = np.bincount(pool_called[: taken[-1] + 1], minlength=2)  # all it judged
        est = estimate_truth(counts, [audit], target.probs, judged, Bootstrap(seed=a.seed))
        rows[name] = {
            "quotas": quotas.tolist(), "verifier_counts": counts.tolist(),
            "verifier_fd": fairness_discrepancy(counts / counts.sum(), target.probs),
            "true": true_frac.tolist(), "true_fd": fairness_discrepancy(true_frac, target.probs),
            "estimated_true": est,
            "covered": bool(all(lo <= t <= hi for lo, t, hi in
                                zip(est["low"], true_frac, est["high"], strict=True))),
        }  # fmt: skip
        r = rows[name]
        print(f"{name:<17} quotas {r['quotas']}  verifier FD {r['verifier_fd']:.3f}  "
              f"true {np.round(true_frac, 3).tolist()} (FD {r['true_fd']:.3f})  estimated "
              f"{np.round(est['probs'], 3).tolist()} [{est['low'][0]:.3f}, {est['high'][0]:.3f}] "
              f"covers the truth: {r['covered']}")  # fmt: skip
    bars = [
        Bar("plain quotas: the interval covers the true distribution",
            float(rows["plain quotas"]["covered"]), "==", 1.0),
        Bar("corrected quotas: the interval covers the true distribution",
            float(rows["corrected quotas"]["covered"]), "==", 1.0),
        Bar("corrected quotas: true FD", rows["corrected quotas"]["true_fd"], "<=", FD_BAR),
        Bar("plain quotas miss the truth (true FD above the bar)",
            rows["plain quotas"]["true_fd"], ">=", FD_BAR),
    ]  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "audit_confusion": audit.tolist(), "flip": {str(k): v for k, v in FLIP.items()},
        "rows": rows, "bars": bars_json(bars),
        "settings": run_settings(n=a.n, pool=a.pool, audit_n=a.audit_n, seed=a.seed,
                                 strength=strength, steps=50, target="skin 50/50"),
    }  # fmt: skip
    a.out.write_text(json.dumps(result, indent=2))
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    raise SystemExit(main())
