"""The ``guidance`` section: how samples are steered (``GuidanceConfig`` as params)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fairsynth.app.config.base import (
    AtLeast1,
    ConfigError,
    FiniteAtLeast0,
    FreeList,
    Invalid,
    Positive,
    Section,
    is_number,
    worded,
)
from fairsynth.guidance.config import LOSSES, MODES, GuidanceConfig

_GUIDANCE = GuidanceConfig()  # the guidance layer's defaults are the shipped ones


class GuidanceParams(Section):
    """The ``guidance`` section: ``fairsynth.guidance.config.GuidanceConfig`` as params, with
    its defaults and its own checks (``to_config``)."""

    mode: Annotated[
        Literal[MODES],
        worded(f"must be one of {MODES}, got {{value}}"),
    ] = _GUIDANCE.mode
    loss: Annotated[
        Literal[LOSSES],
        worded(f"must be one of {LOSSES}, got {{value}}"),
    ] = _GUIDANCE.loss
    strength: FiniteAtLeast0 = _GUIDANCE.strength
    window: FreeList = Field(default_factory=lambda: list(_GUIDANCE.window))  # numbers as given
    temperature: Positive = _GUIDANCE.temperature
    max_step: FiniteAtLeast0 = _GUIDANCE.max_step
    batch_size: AtLeast1 = 64
    residual: bool = _GUIDANCE.residual  # without quotas (evaluate): guide toward what lacks
    protect: bool = _GUIDANCE.protect  # leave the attributes the target does not name as they are
    shift: FiniteAtLeast0 = _GUIDANCE.shift  # distribution: class-mean shift toward the plan

    @field_validator("window")
    @classmethod
    def _window(cls, window: list) -> list:
        if len(window) != 2 or not all(is_number(w) for w in window):
            raise Invalid("must be [start, end]")
        if not 0 <= window[0] <= window[1] <= 1:
            raise Invalid("must be [start, end] with 0 <= start <= end <= 1")
        return window

    @model_validator(mode="after")
    def _guidance_config(self) -> GuidanceParams:
        try:
            self.to_config()  # GuidanceConfig's own checks, should they ever say more
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        return self

    def to_config(self, **changes) -> GuidanceConfig:
        """The guidance layer's config of this section, with ``changes`` (e.g. a strength)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(GuidanceConfig)}
        values["window"] = (float(self.window[0]), float(self.window[1]))
        for key in ("strength", "temperature", "max_step", "shift"):
            values[key] = float(values[key])
        return GuidanceConfig(**{**values, **changes})
