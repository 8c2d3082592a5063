"""Unmixing a confusion: the true distribution behind fractions an imperfect judge counted."""

from __future__ import annotations

import numpy as np


def unmix(verified: np.ndarray, confusion: np.ndarray, iters: int = 2000) -> np.ndarray:
    """The true distribution t (on the simplex) that best explains the verified fractions as
    ``confusion.T @ t``: maximum likelihood by EM (never negative, unlike a plain inverse)."""
    o = np.asarray(verified, dtype=np.float64)
    o = o / max(o.sum(), 1e-12)
    t = np.full(len(o), 1.0 / len(o))
    for _ in range(iters):
        mixed = confusion.T @ t
        new = t * (confusion @ (o / np.maximum(mixed, 1e-12)))
        new /= new.sum()
        if np.abs(new - t).max() < 1e-10:
            return new
        t = new
    return t
