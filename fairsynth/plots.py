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
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)
    return path
