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
BAD_IMAGE = "bad_image"
DISAGREE = "disagree"


@dataclass
class Verdict:
    probs: dict[str, np.ndarray]  # attribute -> (n, n_classes), rows sum to 1
    rejects: list[str | None] = field(default_factory=list)  # per sample: None or a reason
    second: dict[str, np.ndarray] | None = None  # the second verifier's probabilities, if any

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


def screen_images(images, size: int | None = None, min_size: int = 8):
    """Split a batch into usable (h, w, 3) uint8 images and per-sample rejections.

    ``images`` may be an array or a list of arrays (anything else per sample is unusable).
    Grayscale (h, w) or (h, w, 1) images are expanded to 3 channels; RGBA loses alpha. An
    image that is not an array of a known layout, is smaller than ``min_size``, or (when
    ``size`` is given) is not ``size`` x ``size``, is rejected as ``bad_image``.
    """
    good: list[np.ndarray] = []
    rejects: list[str | None] = []
    for img in list(images):
        try:
            a = np.asarray(img)
        except Exception:
            a = None
        if a is not None and a.dtype == np.uint8:
            if a.ndim == 2:
                a = a[:, :, None]
            if a.ndim == 3 and a.shape[-1] == 1:
                a = np.repeat(a, 3, axis=-1)
            elif a.ndim == 3 and a.shape[-1] == 4:
                a = a[:, :, :3]
        ok = (
            a is not None
            and a.dtype == np.uint8
            and a.ndim == 3
            and a.shape[-1] == 3
            and min(a.shape[:2]) >= min_size
            and (size is None or a.shape[:2] == (size, size))
        )
        good.append(np.ascontiguousarray(a) if ok else None)
        rejects.append(None if ok else BAD_IMAGE)
    return good, rejects


def uniform_probs(attributes: dict[str, tuple[str, ...]], n: int) -> dict[str, np.ndarray]:
    return {k: np.full((n, len(v)), 1.0 / len(v)) for k, v in attributes.items()}


def verify_screened(verifier, images, size: int | None, judge) -> Verdict:
    """Run ``judge(list of good images) -> Verdict`` on the usable images; unusable ones get
    ``bad_image`` and uniform probabilities (never a guess)."""
    good, rejects = screen_images(images, size)
    keep = [i for i, g in enumerate(good) if g is not None]
    probs = uniform_probs(verifier.attributes, len(good))
    if keep:
        inner = judge(np.stack([good[i] for i in keep]))
        for k in probs:
            probs[k][keep] = inner.probs[k]
        for j, i in enumerate(keep):
            rejects[i] = inner.rejects[j]
    return Verdict(probs, rejects)


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


def load_verifier(config, space=None) -> Verifier:
    """The verifier(s) named by a ``VerifyConfig`` (a pair when ``second`` is set), with their
    classes in ``space``'s order when a space is given."""
    first = load_one(config.verifier, config, space)
    if not config.second:
        return first
    return VerifierPair(first, load_one(config.second, config, space))


def load_one(name: str, config, space=None) -> Verifier:
    if name == "deepface":
        from fairsynth.verify.deepface import DeepfaceVerifier

        verifier = DeepfaceVerifier(config.deepface)
    else:
        from fairsynth.toyfaces import resolve
        from fairsynth.toyfaces.classifiers import AttributeClassifier

        verifier = ClassifierVerifier(AttributeClassifier.load(resolve("verifier", name)))
    if space is None:
        return verifier
    try:
        return AlignedVerifier(verifier, space)
    except ValueError:
        verifier.close()
        raise
