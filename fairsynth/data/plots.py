"""Plots people would rather look at than tables: distributions side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np


def distribution_bars(
    cells: Sequence[str],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    title: str,
    ylabel: str = "fraction",
) -> Path:
    """Grouped bar chart, one group per cell, one bar per series (e.g. reference vs target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    k = len(series)
    x = np.arange(len(cells))
    width = 0.8 / max(1, k)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(cells) + 2), 3.6), dpi=110)
    for j, (name, values) in enumerate(series.items()):
        ax.bar(x + (j - (k - 1) / 2) * width, values, width, label=name)
    ax.set_xticks(
        x,
        list(cells),
        rotation=30 if len(cells) > 4 else 0,
        ha="right" if len(cells) > 4 else "center",
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


def group_accuracy_bars(report: dict, path: str | Path) -> Path:
    """Accuracy per group (and the worst group) for each training setting, with 95 % CIs: one
    panel per scenario of the downstream report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = [*report["groups"], "worst group"]
    panels = report["scenarios"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), dpi=110,
                             squeeze=False)  # fmt: skip
    for ax, (name, scenario) in zip(axes[0], panels.items(), strict=True):
        settings = scenario["settings"]
        k = len(settings)
        x = np.arange(len(columns))
        width = 0.8 / max(1, k)
        lows = []
        for j, (setting, s) in enumerate(settings.items()):
            stats = [s["by_group"][g] for g in report["groups"]] + [s["worst_group"]]
            means = np.array([v["mean"] for v in stats])
            low = np.array([v["low"] if v["low"] is not None else v["mean"] for v in stats])
            high = np.array([v["high"] if v["high"] is not None else v["mean"] for v in stats])
            lows.extend(low)
            ax.bar(x + (j - (k - 1) / 2) * width, means, width, label=setting,
                   yerr=np.stack([means - low, high - means]), capsize=2)  # fmt: skip
        ax.set_ylim(max(0.0, min(lows) - 0.05), 1.02)
        ax.set_xticks(x, [f"{report['sensitive']}: {c}" if c != "worst group" else c
                          for c in columns])  # fmt: skip
        ax.set_ylabel(f"accuracy ({report['label']})")
        noise = f", {scenario['label_noise']:.0%} labels flipped" if scenario["label_noise"] else ""
        ax.set_title(f"{name}: {scenario['reference_n']} reference samples{noise}\n"
                     f"({len(report['seeds'])} seeds, 95 % CI)", fontsize=10)  # fmt: skip
        ax.spines[["top", "right"]].set_visible(False)
    axes[0][0].legend(frameon=False, fontsize=7, loc="lower left")
    fig.tight_layout()
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """PNG without the software version (same bytes on every run), written atomically."""
    import io

    import matplotlib.pyplot as plt

    from fairsynth.data.shards import write_atomic

    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    write_atomic(path, buf.getvalue())
    return Path(path)
