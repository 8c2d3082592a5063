"""The truth behind an imperfect verifier: a verifier's confusion matrices (measured on labelled
reference data by the audit stage) turn the counts it made into an estimate of the true cell
distribution, with a bootstrap interval, and a true target into the verified counts that meet
it. Assumes label shift: P(verified class | true class) is the same on the generated samples as
on the audit's labelled samples, and errors on different attributes are independent.

Quotas select samples *by their verified cell*, which keeps P(true | verified) but not
P(verified | true): the published set's truth is therefore its verified counts times the
posterior P(true | verified) of everything the verifier judged (``generated``), whose own truth
is unmixed from the confusion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fairsynth.core.metrics import fairness_discrepancy
from fairsynth.core.unmixing import unmix

JEFFREYS = 0.5  # the Dirichlet prior on each confusion row's counts


def cell_confusion(matrices: Sequence[np.ndarray]) -> np.ndarray:
    """P(verified cell | true cell) over the joint cells (row-major, as AttributeSpace orders
    them) from per-attribute count matrices (rows: true class, columns: verified class)."""
    joint = np.ones((1, 1))
    for m in matrices:
        m = np.asarray(m, dtype=np.float64)
        rows = m.sum(1, keepdims=True)
        if (rows == 0).any():
            raise ValueError("the audit saw no labelled sample of some class: cannot correct")
        joint = np.kron(joint, m / rows)
    return joint


def verified_target(true_target: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """The verified-cell fractions a set must have for its true distribution to be the target."""
    p = confusion.T @ np.asarray(true_target, dtype=np.float64)
    return p / p.sum()


def posterior(generated: np.ndarray, confusion: np.ndarray, iters: int = 2000) -> np.ndarray:
    """P(true cell | verified cell) (columns: verified cells) among samples the verifier
    counted as ``generated``, their truth unmixed from the confusion; a verified cell with no
    mass falls back to the confusion's own (uniform-prior) posterior."""
    t = unmix(generated, confusion, iters)
    joint = t[:, None] * confusion  # P(true, verified)
    flat = confusion / np.maximum(confusion.sum(0, keepdims=True), 1e-12)
    mass = joint.sum(0, keepdims=True)
    return np.where(mass > 1e-12, joint / np.maximum(mass, 1e-12), flat)


def selected_truth(counts: np.ndarray, generated: np.ndarray, confusion: np.ndarray) -> np.ndarray:
    """The true distribution of a subset picked by verified cell (``counts``) from samples the
    verifier counted as ``generated``: counts times the posterior P(true | verified)."""
    o = np.asarray(counts, dtype=np.float64)
    return posterior(generated, confusion) @ (o / max(o.sum(), 1e-12))


@dataclass(frozen=True)
class Bootstrap:
    """``n_boot`` draws, intervals at ``level``, drawn from ``seed``."""

    n_boot: int = 1000
    level: float = 0.95
    seed: int = 0


def estimate_truth(
    counts: np.ndarray,
    matrices: Sequence[np.ndarray],
    target: np.ndarray | None = None,
    generated: np.ndarray | None = None,
    bootstrap: Bootstrap = Bootstrap(),
) -> dict:
    """The estimated true cell distribution of a set whose verifier counted ``counts`` (picked
    by verified cell from the judged samples it counted as ``generated``; None: not picked,
    the set is all it judged), with percentile intervals. A draw takes each confusion row from
    its Dirichlet posterior (the audit's counts + a Jeffreys 1/2: an audit that saw no error
    still leaves room for a rare one), resamples the judged counts, then each verified cell's
    samples' true cells from that draw's posterior (the set's counts are fixed: quotas set
    them)."""
    counts = np.asarray(counts, dtype=np.int64)
    generated = counts if generated is None else np.asarray(generated, dtype=np.int64)
    point = selected_truth(counts, generated, cell_confusion(matrices))
    rng, level = np.random.default_rng(bootstrap.seed), bootstrap.level
    n, n_gen = int(counts.sum()), int(generated.sum())
    draws = []
    for _ in range(bootstrap.n_boot):
        resampled = cell_confusion([_draw_rows(np.asarray(m), rng) for m in matrices])
        post = posterior(rng.multinomial(n_gen, generated / max(n_gen, 1)), resampled)
        truth = sum(rng.multinomial(int(c), post[:, v] / post[:, v].sum())
                    for v, c in enumerate(counts) if c)  # fmt: skip
        draws.append(truth / max(n, 1))
    draws = np.array(draws)
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    out = {"probs": point.tolist(), "low": lo.tolist(), "high": hi.tolist(), "level": level}
    if target is not None:
        fds = [fairness_discrepancy(d, target) for d in draws]
        out["fd"] = fairness_discrepancy(point, target)
        out["fd_interval"] = np.quantile(fds, [(1 - level) / 2, (1 + level) / 2]).tolist()
    return out


def _draw_rows(m: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if (m.sum(1) == 0).any():
        raise ValueError("the audit saw no labelled sample of some class: cannot correct")
    return np.stack([rng.dirichlet(r + JEFFREYS) for r in m.astype(np.float64)])


def audit_matrices(verifier_audit: Mapping, names: Sequence[str]) -> list[np.ndarray] | None:
    """The per-attribute count matrices of one verifier's audit entry, or None when it did not
    judge every one of ``names``."""
    if not all(n in verifier_audit for n in names):
        return None
    return [np.asarray(verifier_audit[n]["matrix"]) for n in names]
