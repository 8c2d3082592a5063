"""Verifiers: the external classifiers that judge finished images.

A verifier maps uint8 NHWC images to a ``Verdict``: per attribute, probabilities over the
configured classes, and per sample an optional rejection reason (``no_face``,
``several_faces``) for images it cannot judge at all. Generation accepts a sample only when
the verdict has no rejection, the verifier is confident, and the cell has room.

``load_verifier(params.verify)`` builds the configured one: ``toyfaces`` (the shipped toy
verifier) or a classifier folder, or ``deepface`` (in its own worker process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

NO_FACE = "no_face"
SEVERAL_FACES = "several_faces"


@dataclass
class Verdict:
    probs: dict[str, np.ndarray]  # attribute -> (n, n_classes), rows sum to 1
    rejects: list[str | None] = field(default_factory=list)  # per sample: None or a reason

    def __post_init__(self) -> None:
        n = len(next(iter(self.probs.values()))) if self.probs else 0
        if not self.rejects:
            self.rejects = [None] * n
        if len(self.rejects) != n:
            raise ValueError("a verdict needs one rejection entry per sample")


class Verifier(Protocol):
    attributes: dict[str, tuple[str, ...]]

    def verify(self, images: np.ndarray) -> Verdict: ...

    def close(self) -> None: ...


class ClassifierVerifier:
    """A torch attribute classifier (the toy world's verifier, or any saved classifier folder)."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.attributes = classifier.attributes

    def verify(self, images: np.ndarray) -> Verdict:
        return Verdict(self.classifier.predict_proba(images))

    def close(self) -> None:
        pass


def load_verifier(config) -> Verifier:
    """The verifier named by a ``VerifyConfig``."""
    if config.verifier == "deepface":
        from fairsynth.verify.deepface import DeepfaceVerifier

        return DeepfaceVerifier(config.deepface)
    from fairsynth.toyfaces import resolve
    from fairsynth.toyfaces.classifiers import AttributeClassifier

    return ClassifierVerifier(AttributeClassifier.load(resolve("verifier", config.verifier)))
