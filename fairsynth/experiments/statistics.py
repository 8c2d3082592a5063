"""The downstream experiment's measurements: predictions, Fairlearn group metrics per run, and
paired effects over seeds with 95 % t-intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

# paired effects over seeds: (setting, minus this setting)
EFFECTS = {
    "fairsynth_vs_reference": ("reference+fairsynth", "reference"),  # b - a
    "fairsynth_vs_resampling": ("reference+fairsynth", "reference-resampled"),  # b - d
    "fairsynth_vs_reweighting": ("reference+fairsynth", "reference-reweighted"),  # b - e
    "fairsynth_resampled_vs_resampling": (  # f - d
        "reference+fairsynth-resampled",
        "reference-resampled",
    ),
    "rejection_vs_reference": ("reference+rejection", "reference"),  # c - a
    "fairsynth_vs_rejection": ("reference+fairsynth", "reference+rejection"),  # b - c
}
METRICS = (
    "worst_group", "gap", "accuracy", "equalized_odds_difference", "demographic_parity_difference"
)  # fmt: skip


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, label: str) -> np.ndarray:
    out = [
        model(images[s : s + 512] * 2.0 - 1.0)[label].argmax(1) for s in range(0, len(images), 512)
    ]
    return torch.cat(out).numpy()


def group_metrics(y_true, y_pred, groups, group_names) -> dict:
    """Fairlearn's group metrics: accuracy overall and per group, worst group, largest gap; for
    a binary label also the equalized-odds and demographic-parity differences and each group's
    selection rate, true- and false-positive rate."""
    from fairlearn.metrics import (
        MetricFrame,
        demographic_parity_difference,
        equalized_odds_difference,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn.metrics import accuracy_score

    sensitive = pd.Series(np.asarray(group_names)[groups], name="group")
    mf = MetricFrame(
        metrics=accuracy_score, y_true=y_true, y_pred=y_pred, sensitive_features=sensitive
    )
    out = {
        "accuracy": float(mf.overall),
        "by_group": {str(k): float(v) for k, v in mf.by_group.items()},
        "worst_group": float(mf.group_min()),
        "gap": float(mf.difference(method="between_groups")),
        "equalized_odds_difference": None,
        "demographic_parity_difference": None,
        "rates_by_group": None,
    }
    if set(np.unique(y_true)) <= {0, 1}:  # Fairlearn's rates are for binary labels
        rates = MetricFrame(
            metrics={"selection_rate": selection_rate, "tpr": true_positive_rate,
                     "fpr": false_positive_rate},
            y_true=y_true, y_pred=y_pred, sensitive_features=sensitive,
        )  # fmt: skip
        out["equalized_odds_difference"] = float(
            equalized_odds_difference(y_true, y_pred, sensitive_features=sensitive)
        )
        out["demographic_parity_difference"] = float(
            demographic_parity_difference(y_true, y_pred, sensitive_features=sensitive)
        )
        out["rates_by_group"] = {
            str(g): {k: float(v) for k, v in row.items()} for g, row in rates.by_group.iterrows()
        }
    return out


def t_interval(values: list[float], level: float = 0.95) -> dict:
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    if len(v) < 2:
        return {"mean": mean, "low": None, "high": None, "n": len(v)}
    half = float(stats.t.ppf(0.5 + level / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(v)}


def summarize(runs: list[dict], group_names: list[str]) -> dict:
    """Per setting: mean and 95 % CI over seeds; effects as paired differences per seed."""
    frame = pd.DataFrame(runs)
    metrics = [m for m in METRICS if m in frame and frame[m].notna().all()]
    settings = {}
    for setting, rows in frame.groupby("setting", sort=False):
        settings[setting] = {m: t_interval(list(rows[m])) for m in metrics}
        settings[setting]["by_group"] = {
            g: t_interval([r[g] for r in rows["by_group"]]) for g in group_names
        }
    effects = {}
    for name, (a, b) in EFFECTS.items():
        if a not in settings or b not in settings:
            continue
        pa = frame[frame["setting"] == a].set_index("seed")
        pb = frame[frame["setting"] == b].set_index("seed").loc[pa.index]
        effects[name] = {m: t_interval(list(pa[m] - pb[m])) for m in metrics}
    return {"settings": settings, "effects": effects}
