"""What a verifier says about a batch: per attribute, probabilities over the configured classes,
and per sample an optional rejection reason for images it cannot judge at all; and the
screening every verifier applies first (unusable images are rejected, never guessed)."""

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
