"""Guidance settings: which guidance, which divergence, how strong, over which steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("none", "sample", "distribution")
LOSSES = ("chi2", "kl", "l2", "ot")


@dataclass(frozen=True)
class GuidanceConfig:
    """The defaults are what fairsynth ships (``params.yaml`` need not repeat them): an
    entropic transport plan (``ot``) with the class-mean shift, at the strength calibrated
    for them on the toy DDPM (50 DDIM steps, eta 1; the shipped ADP files its calibration)."""

    mode: str = "distribution"
    loss: str = "ot"
    strength: float = 215.0
    window: tuple[float, float] = (0.0, 1.0)  # fraction of the schedule; 0 = first (noisiest) step
    temperature: float = 1.0
    max_step: float = 0.5  # cap on each sample's step, relative to the norm of its h (0: no cap)
    # over several batches: guide each toward what the run still lacks by the ADP's count of
    # the finished batches (closed loop), instead of toward the fixed target (open loop)
    residual: bool = False
    # project each sample's step off the directions that move the ADP's heads for attributes
    # the target does not name (fairsynth.guidance.protect)
    protect: bool = False
    # distribution: before the gradient step, move each sample by this many times the class-mean
    # difference the transport plan asks of it (fairsynth.guidance.class_means); 0: off
    shift: float = 1.0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"guidance.mode must be one of {MODES}, got {self.mode!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"guidance.loss must be one of {LOSSES}, got {self.loss!r}")
        if not np.isfinite(self.strength) or self.strength < 0:
            raise ValueError("guidance.strength must be a finite number >= 0")
        lo, hi = self.window
        if not 0.0 <= lo <= hi <= 1.0:
            raise ValueError("guidance.window must be [start, end] with 0 <= start <= end <= 1")
        if not self.temperature > 0:
            raise ValueError("guidance.temperature must be > 0")
        if not np.isfinite(self.shift) or self.shift < 0:
            raise ValueError("guidance.shift must be a finite number >= 0")
        if not np.isfinite(self.max_step) or self.max_step < 0:
            raise ValueError("guidance.max_step must be a finite number >= 0")
