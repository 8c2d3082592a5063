"""One sampler signature for every backend, in the spirit of k-diffusion's samplers.

A backend draws its initial noise from a generator (``noise``) and denoises it
(``sample(noise, settings, generator, callback, guidance)``) into images in [-1, 1]. The
settings object carries what every loop needs (steps, eta, the hooked layer, the scheduler); ``callback``
sees each step (``StepInfo``); ``guidance`` edits h-space inside each UNet call through a hook
(``fairsynth.diffusion.hspace``), so every loop stays the standard one. The backends are
``DiffusionModel`` (unconditional, ``unconditional.py``) and ``PromptedModel`` (text-to-image
bound to a prompt, ``text2image.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class SamplerSettings:
    steps: int = 50
    eta: float = 0.0  # DDIM eta: 0 deterministic, 1 as stochastic as DDPM
    layer: str = "mid_block"  # the h-space layer hooked for guidance and callbacks
    # a name from ``fairsynth.diffusion.schedulers`` (or a diffusers class name), and the
    # options it is built with on top of the model's scheduler config, as sorted pairs
    # (None: ddim, or the model's own scheduler for flow-matching models)
    scheduler: str | None = None
    scheduler_options: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if isinstance(self.scheduler_options, dict):
            object.__setattr__(
                self, "scheduler_options", tuple(sorted(self.scheduler_options.items()))
            )


@dataclass
class StepInfo:
    index: int  # 0-based step number
    total: int
    timestep: int
    x: torch.Tensor  # the sample after this step (model space)
    h: torch.Tensor | None = None  # h-space (the hooked layer's output) of this step, after edits


StepCallback = Callable[[StepInfo], None]


class HSpaceGuidance(Protocol):
    """What a loop asks of guidance: told each step before the UNet call, then asked to edit
    h (the hooked layer's output) inside it."""

    def begin_step(self, timestep: int | torch.Tensor, index: int, total: int) -> None: ...

    def edit(self, h: torch.Tensor) -> torch.Tensor: ...


class Backend(Protocol):
    unet: torch.nn.Module

    @property
    def image_size(self) -> int: ...

    @property
    def provenance(self) -> dict: ...  # recorded per sample in the manifest

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor: ...

    def sample(
        self,
        noise: torch.Tensor,
        settings: SamplerSettings,
        generator: torch.Generator,
        callback: StepCallback | None = None,
        guidance: HSpaceGuidance | None = None,
    ) -> torch.Tensor: ...


def sample(
    backend: Backend,
    n: int,
    generator: torch.Generator,
    settings: SamplerSettings = SamplerSettings(),
    callback: StepCallback | None = None,
    guidance: HSpaceGuidance | None = None,
) -> torch.Tensor:
    """``n`` images in [-1, 1], (n, c, h, w): noise from ``generator``, then the loop (which
    draws its stochastic-step noise from the same generator, after the initial noise)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    return backend.sample(backend.noise(n, generator), settings, generator, callback, guidance)


def batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """The noise generator of one batch, derived from (run seed, batch index) only, so any batch
    can be regenerated alone (resume, scale-out) with the same result. Always a CPU generator:
    noise is drawn on the CPU and moved (``fairsynth.diffusion.device``), whatever the model's
    device, so a seed means the same everywhere."""
    mixed = np.random.SeedSequence([int(seed), int(batch_index)]).generate_state(
        1, dtype=np.uint64
    )[0]
    return torch.Generator(device="cpu").manual_seed(int(mixed) & ((1 << 63) - 1))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
