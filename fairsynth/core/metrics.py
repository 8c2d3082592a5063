"""Fairness and distribution metrics over a fixed category list.

FD (Fairness Discrepancy) = || p_target - mean over samples of the one-hot (hard) or
probability (soft) prediction ||_2, over the cells of the target's attributes, in a fixed
order (classes never predicted count as 0).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fairsynth.core.attributes import AttributeSpace, Target, joint_from_per_attribute


def cell_counts(cells: np.ndarray, n_cells: int) -> np.ndarray:
    return np.bincount(np.asarray(cells, dtype=np.int64), minlength=n_cells)[:n_cells]


def hard_distribution(per_attribute: Mapping[str, np.ndarray], space: AttributeSpace) -> np.ndarray:
    """Fraction of samples whose argmax falls in each cell of ``space``."""
    n = len(next(iter(per_attribute.values())))
    if n == 0:
        return np.zeros(space.n_cells)
    labels = {name: np.asarray(per_attribute[name]).argmax(1) for name in space.names}
    return cell_counts(space.cell_index(labels), space.n_cells) / n


def soft_distribution(per_attribute: Mapping[str, np.ndarray], space: AttributeSpace) -> np.ndarray:
    joint = joint_from_per_attribute(per_attribute, space)
    return joint.mean(axis=0) if len(joint) else np.zeros(space.n_cells)


def fairness_discrepancy(p: np.ndarray, target: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(target) - np.asarray(p)))


def kl_divergence(p: np.ndarray, q: np.ndarray, eps: float = 1e-12) -> float:
    """KL(p || q), with 0 log 0 = 0; infinite where p > 0 = q."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    mask = p > 0
    if (q[mask] <= 0).any():
        return float("inf")
    return float(np.sum(p[mask] * (np.log(p[mask]) - np.log(np.maximum(q[mask], eps)))))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    return float(0.5 * np.abs(np.asarray(p) - np.asarray(q)).sum())


def evaluate_against_target(per_attribute: Mapping[str, np.ndarray], target: Target) -> dict:
    """All distribution metrics of verifier predictions against a target."""
    hard = hard_distribution(per_attribute, target.space)
    soft = soft_distribution(per_attribute, target.space)
    n = len(next(iter(per_attribute.values())))
    return {
        "n": int(n),
        "cells": target.space.cell_names(),
        "target": target.probs.round(6).tolist(),
        "hard": hard.round(6).tolist(),
        "soft": soft.round(6).tolist(),
        "counts": cell_counts(
            target.space.cell_index(
                {k: np.asarray(per_attribute[k]).argmax(1) for k in target.space.names}
            ),
            target.space.n_cells,
        ).tolist()
        if n
        else [0] * target.space.n_cells,
        "fd_hard": fairness_discrepancy(hard, target.probs),
        "fd_soft": fairness_discrepancy(soft, target.probs),
        "kl_target_to_hard": kl_divergence(target.probs, hard),
        "tv_hard": total_variation(hard, target.probs),
    }


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (rows are samples)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))
