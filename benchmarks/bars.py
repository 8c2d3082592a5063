"""What a benchmark shares: its bars (checked, a non-zero exit on a miss) and the settings
that decide its figures (recorded with them)."""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bar:
    name: str
    value: float
    op: str  # "<=" or ">=" (or "==" for a yes/no property, 1.0 = yes)
    limit: float

    @property
    def ok(self) -> bool:
        if self.op == "<=":
            return self.value <= self.limit
        if self.op == ">=":
            return self.value >= self.limit
        return self.value == self.limit

    def line(self) -> str:
        verdict = "ok  " if self.ok else "MISS"
        return f"{verdict} {self.name}: {self.value:.4g} (bar {self.op} {self.limit:g})"


def add_bar_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--report-only", action="store_true", help="print the bars but exit 0 when one misses"
    )


def check_bars(bars: list[Bar], report_only: bool = False) -> int:
    """Print every bar; the exit code: 1 if one misses (0 with ``report_only``)."""
    print("\nbars:")
    for bar in bars:
        print("  " + bar.line())
    missed = [b for b in bars if not b.ok]
    if missed:
        print(
            f"{len(missed)} of {len(bars)} bars missed" + (" (report only)" if report_only else "")
        )
    return 1 if missed and not report_only else 0


def bars_json(bars: list[Bar]) -> list[dict]:
    return [{**asdict(b), "value": float(b.value), "ok": bool(b.ok)} for b in bars]


def run_settings(**decided_by) -> dict:
    """Everything besides the inputs that decides a benchmark's figures."""
    return {
        **decided_by,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _git(*args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
