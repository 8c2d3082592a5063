"""Quotas per cell: how many synthetic samples of each cell to generate.

``standalone``: N samples that follow the target (largest-remainder rounding, so the quotas sum
to exactly N). ``augment``: the fewest synthetic samples per cell such that reference +
synthetic follows the target: the smallest total T with T * p_c >= r_c for every cell, i.e.
T = max_c r_c / p_c over cells with p_c > 0, then quotas = round(T p) - r (never negative).
"""

from __future__ import annotations

import math

import numpy as np

MODES = ("standalone", "augment")


def standalone_quotas(target: np.ndarray, n: int) -> np.ndarray:
    if n < 1:
        raise ValueError("generate.n must be >= 1 in standalone mode")
    return largest_remainder(np.asarray(target, dtype=np.float64), n)


def augment_quotas(target: np.ndarray, reference_counts: np.ndarray) -> np.ndarray:
    p = np.asarray(target, dtype=np.float64)
    r = np.asarray(reference_counts, dtype=np.int64)
    if p.shape != r.shape:
        raise ValueError("target and reference counts must cover the same cells")
    if (r[p == 0] > 0).any():
        cells = np.flatnonzero((p == 0) & (r > 0)).tolist()
        raise ValueError(
            f"augment mode cannot reach a target of 0 in cells {cells} that the reference already "
            "fills; drop those reference samples or use standalone mode"
        )
    total = max(math.ceil(max(r[c] / p[c] for c in np.flatnonzero(p > 0)) - 1e-9), int(r.sum()))
    # largest remainder of the final total, then make sure no cell ends below its reference count
    while True:
        final = largest_remainder(p, total)
        if (final >= r).all():
            return final - r
        total += 1


def remaining_target(quotas: np.ndarray, accepted: np.ndarray) -> np.ndarray | None:
    """The remaining quota normalised: the target of the next batch (None when all met)."""
    rest = np.maximum(np.asarray(quotas) - np.asarray(accepted), 0).astype(np.float64)
    if rest.sum() == 0:
        return None
    return rest / rest.sum()


def residual_target(target: np.ndarray, counts: np.ndarray, total: int) -> np.ndarray:
    """What the next samples should follow so that ``total`` samples in all follow ``target``,
    given the cell ``counts`` so far (the fixed target once nothing is lacking)."""
    p = np.asarray(target, dtype=np.float64)
    lack = np.maximum(p * total - np.asarray(counts, dtype=np.float64), 0.0)
    return p if lack.sum() <= 0 else lack / lack.sum()


def largest_remainder(p: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    raw = p / p.sum() * n
    counts = np.floor(raw).astype(np.int64)
    short = n - counts.sum()
    if short > 0:
        order = np.lexsort((np.arange(len(p)), -(raw - counts)))
        counts[order[:short]] += 1
    return counts
