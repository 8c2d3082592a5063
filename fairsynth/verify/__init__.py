"""Verifiers: the external classifiers that judge finished images.

A verifier maps uint8 NHWC images to a ``Verdict``: per attribute, probabilities over the
configured classes, and per sample an optional rejection reason (``no_face``,
``several_faces``) for images it cannot judge at all. Generation accepts a sample only when
the verdict has no rejection, the verifier is confident, and the cell has room.

``load_verifier(spec)`` builds the configured one: a classifier folder or a registered kind
(``fairsynth.verify.kinds``: ``deepface``, in its own worker process).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fairsynth.verify.verdict import (
    BAD_IMAGE,
    DISAGREE,
    NO_FACE,
    SEVERAL_FACES,
    Verdict,
    Verifier,
    screen_images,
    uniform_probs,
    verify_screened,
)

__all__ = [
    "BAD_IMAGE", "DISAGREE", "NO_FACE", "SEVERAL_FACES", "AlignedVerifier",
    "ClassifierVerifier", "Verdict", "Verifier", "VerifierPair", "VerifierSpec",
    "load_one", "load_verifier", "screen_images", "uniform_probs", "verify_screened",
]  # fmt: skip


class ClassifierVerifier:
    """A torch attribute classifier (the toy world's verifier, or any saved classifier folder)."""

    def __init__(self, classifier):
        self.classifier = classifier
        self.attributes = classifier.attributes
        # classifier folders record their input size; the toy world's are 32x32
        self.size = int(getattr(classifier, "meta", {}).get("image_size", 32))

    def verify(self, images) -> Verdict:
        return verify_screened(
            self, images, self.size, lambda x: Verdict(self.classifier.predict_proba(x))
        )

    def close(self) -> None:
        pass


class VerifierPair:
    """Two independent verifiers: the first decides the cell; a sample on which they disagree
    (on any attribute both judge) is rejected as ``disagree``. Both verdicts are recorded."""

    def __init__(self, first, second):
        shared = [k for k in first.attributes if k in second.attributes]
        for k in shared:
            if tuple(first.attributes[k]) != tuple(second.attributes[k]):
                raise ValueError(
                    f"verify.second: classes of {k!r} differ from the first verifier's "
                    f"({list(second.attributes[k])} vs {list(first.attributes[k])})"
                )
        if not shared:
            raise ValueError("verify.second judges none of the first verifier's attributes")
        self.first, self.second, self.shared = first, second, shared
        self.attributes = first.attributes

    @property
    def crashes(self) -> list[str]:
        return [*getattr(self.first, "crashes", []), *getattr(self.second, "crashes", [])]

    def verify(self, images) -> Verdict:
        a, b = self.first.verify(images), self.second.verify(images)
        rejects = []
        for i, (ra, rb) in enumerate(zip(a.rejects, b.rejects, strict=True)):
            if ra is not None or rb is not None:
                rejects.append(ra or rb)
            elif any(a.probs[k][i].argmax() != b.probs[k][i].argmax() for k in self.shared):
                rejects.append(DISAGREE)
            else:
                rejects.append(None)
        return Verdict(a.probs, rejects, second={k: b.probs[k] for k in self.shared})

    def close(self) -> None:
        self.first.close()
        self.second.close()


class AlignedVerifier:
    """A verifier whose probabilities come in the params' class order, matched by name: a
    classifier trained on ``[light, dark]`` judges for ``attributes: {skin: [dark, light]}``
    without inverting the labels."""

    def __init__(self, inner, space):
        self.inner = inner
        self.order = space.order_from(inner.attributes, "verifier")
        self.attributes = {
            k: tuple(space.classes(k)) if k in self.order else tuple(v)
            for k, v in inner.attributes.items()
        }

    def __getattr__(self, name: str):  # crashes, size, ... of the wrapped verifier
        if name == "inner":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.inner, name)

    def _reorder(self, probs: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        if probs is None:
            return None
        return {k: p[:, self.order[k]] if k in self.order else p for k, p in probs.items()}

    def verify(self, images) -> Verdict:
        v = self.inner.verify(images)
        return Verdict(self._reorder(v.probs), v.rejects, self._reorder(v.second))

    def close(self) -> None:
        self.inner.close()


@dataclass(frozen=True)
class VerifierSpec:
    """Which verifiers judge a run, resolved: each a classifier folder or ``"deepface"``."""

    first: str | Path
    second: str | Path | None = None  # an independent second opinion: samples must satisfy both
    settings: object | None = None  # the verify section: each kind reads its own part of it
    confidence: float = 0.9


def load_verifier(spec: VerifierSpec, space=None, device: str = "cpu") -> Verifier:
    """The verifier(s) of ``spec`` (a pair when ``second`` is set), with their classes in
    ``space``'s order when a space is given; classifiers on ``device``."""
    first = load_one(spec.first, spec.settings, space, device)
    if not spec.second:
        return first
    return VerifierPair(first, load_one(spec.second, spec.settings, space, device))


def load_one(name: str | Path, settings=None, space=None, device: str = "cpu") -> Verifier:
    """The verifier ``name`` names (a registered kind, a callable or a classifier folder), with
    its own part of ``settings`` (the verify section), its classes in ``space``'s order when a
    space is given."""
    from fairsynth.verify.kinds import kind_of, settings_for

    kind = kind_of(name)
    verifier = kind.load(
        name, settings_for(kind, settings) if settings is not None else None, device
    )
    if space is None:
        return verifier
    try:
        return AlignedVerifier(verifier, space)
    except ValueError:
        verifier.close()
        raise
