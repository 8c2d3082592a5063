"""Scoring images against a target with a verifier: what evaluation, calibration and the
benchmarks report."""

from __future__ import annotations

import numpy as np

from fairsynth.core.attributes import Target
from fairsynth.core.metrics import evaluate_against_target
from fairsynth.verify.classifier import AttributeClassifier
from fairsynth.verify.verdict import Verdict, Verifier


def judge(verifier: Verifier | AttributeClassifier, images: np.ndarray) -> Verdict:
    """The verdict of a verifier, or of a bare classifier (probabilities, no rejections)."""
    if hasattr(verifier, "verify"):
        return verifier.verify(images)
    return Verdict(verifier.predict_proba(images))


def score(
    verifier: Verifier | AttributeClassifier, images: np.ndarray, target: Target, confidence: float,
    verdict: Verdict | None = None,
) -> dict:  # fmt: skip
    """How a set of images scores against ``target`` by ``verifier`` (or a bare classifier):
    FD (hard and soft), per-attribute class fractions, confidence, rejections. ``verdict``:
    the verifier's verdict on ``images`` where it is already known (one set, several targets)."""
    verdict = verdict if verdict is not None else judge(verifier, images)
    probs = verdict.probs
    report = evaluate_against_target({k: probs[k] for k in target.space.names}, target)
    per_attribute = {
        name: {c: float((probs[name].argmax(1) == i).mean()) for i, c in enumerate(classes)}
        for name, classes in verifier.attributes.items()
    }
    conf = np.stack([p.max(1) for p in probs.values()]).min(0)
    report.update(
        {
            "per_attribute": per_attribute,
            "mean_confidence": float(conf.mean()),
            "confident_fraction": float((conf >= confidence).mean()),
            "confidence_threshold": confidence,
            "rejected_fraction": float(np.mean([r is not None for r in verdict.rejects])),
        }
    )
    return report


def confident_by_attribute(verdict: Verdict, confidence: float) -> dict[str, float]:
    """Per attribute, the fraction of images whose top class reaches ``confidence``: which
    attribute the unclear images are unclear on."""
    return {name: float((p.max(1) >= confidence).mean()) for name, p in verdict.probs.items()}
