"""The downstream experiment's measurements: predictions, Fairlearn group metrics per run, and
paired effects over seeds with 95 % t-intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

EFFECTS = {
    "fairsynth_vs_reference": ("reference+fairsynth", "reference"),
    "rejection_vs_reference": ("reference+rejection", "reference"),
    "fairsynth_vs_rejection": ("reference+fairsynth", "reference+rejection"),
}


@torch.no_grad()
def predict(model: torch.nn.Module, images: torch.Tensor, label: str) -> np.ndarray:
    out = [
        model(images[s : s + 512] * 2.0 - 1.0)[label].argmax(1) for s in range(0, len(images), 512)
    ]
    return torch.cat(out).numpy()


def group_metrics(y_true, y_pred, groups, group_names) -> dict:
    """Fairlearn MetricFrame: accuracy overall and per group, worst group, largest gap."""
    from fairlearn.metrics import MetricFrame
    from sklearn.metrics import accuracy_score

    mf = MetricFrame(
        metrics=accuracy_score, y_true=y_true, y_pred=y_pred,
        sensitive_features=pd.Series(np.asarray(group_names)[groups], name="group"),
    )  # fmt: skip
    return {
        "accuracy": float(mf.overall),
        "by_group": {str(k): float(v) for k, v in mf.by_group.items()},
        "worst_group": float(mf.group_min()),
        "gap": float(mf.difference(method="between_groups")),
    }


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
    settings = {}
    for setting, rows in frame.groupby("setting", sort=False):
        settings[setting] = {
            "worst_group": t_interval(list(rows["worst_group"])),
            "gap": t_interval(list(rows["gap"])),
            "accuracy": t_interval(list(rows["accuracy"])),
            "by_group": {g: t_interval([r[g] for r in rows["by_group"]]) for g in group_names},
        }
    effects = {}
    for name, (a, b) in EFFECTS.items():
        if a not in settings or b not in settings:
            continue
        pa = frame[frame["setting"] == a].set_index("seed")
        pb = frame[frame["setting"] == b].set_index("seed").loc[pa.index]
        effects[name] = {
            "worst_group": t_interval(list(pa["worst_group"] - pb["worst_group"])),
            "gap": t_interval(list(pa["gap"] - pb["gap"])),
            "accuracy": t_interval(list(pa["accuracy"] - pb["accuracy"])),
        }
    return {"settings": settings, "effects": effects}
