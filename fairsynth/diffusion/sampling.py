"""The denoising loop: DDIM over any number of steps, as a small function with a callback.

The UNet call and the scheduler step are diffusers' own; guidance (see ``guidance.py``) acts
through hooks on the UNet, so this loop stays the standard one.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from fairsynth.diffusion.hspace import HSpace
from fairsynth.diffusion.unconditional import DiffusionModel

if TYPE_CHECKING:
    from fairsynth.guidance.guide import Guidance


@dataclass
class StepInfo:
    index: int  # 0-based step number
    total: int
    timestep: int
    x: torch.Tensor  # the sample after this step (model space)
    h: torch.Tensor | None = None  # h-space (the hooked layer's output) of this step, after edits


def batch_generator(
    seed: int, batch_index: int, device: str | torch.device = "cpu"
) -> torch.Generator:
    """The noise generator of one batch, derived from (run seed, batch index) only, so any batch
    can be regenerated alone (resume, scale-out) with the same result."""
    mixed = np.random.SeedSequence([int(seed), int(batch_index)]).generate_state(
        1, dtype=np.uint64
    )[0]
    return torch.Generator(device=device).manual_seed(int(mixed) & ((1 << 63) - 1))


@torch.no_grad()
def sample_ddim(
    model: DiffusionModel,
    n: int,
    generator: torch.Generator,
    steps: int = 50,
    eta: float = 0.0,
    callback: Callable[[StepInfo], None] | None = None,
    guidance: Guidance | None = None,
    layer: str = "mid_block",
) -> torch.Tensor:
    """Sample ``n`` images in [-1, 1], (n, c, h, w), with DDIM; ``guidance`` edits h-space
    (the output of ``layer``) inside each UNet call."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    if n < 1:
        raise ValueError("n must be >= 1")
    device = model.unet.device
    scheduler = model.ddim_scheduler()
    scheduler.set_timesteps(steps, device=device)
    x = torch.randn((n, *model.latent_shape), generator=generator, device=device)
    x = x * scheduler.init_noise_sigma
    timesteps = scheduler.timesteps
    hook = HSpace(model.unet, layer) if guidance is not None or callback else nullcontext()
    with hook:
        if guidance is not None:
            hook.edit = guidance.edit
        for i, t in enumerate(timesteps):
            if guidance is not None:
                guidance.begin_step(t, i, len(timesteps))
            eps = model.unet(x, t).sample
            x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
            if callback is not None:
                callback(StepInfo(i, len(timesteps), int(t), x, hook.captured))
    return model.to_image_space(x).clamp(-1, 1)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] NCHW -> uint8 NHWC."""
    x = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def perturbation_sensitivity(
    model, n: int = 32, seed: int = 0, steps: int = 20, scale: float = 4.0, layer: str = "mid_block"
) -> float:
    """How much say h has: mean |Δx| (images in [-1, 1]) between samples with and without a
    random perturbation of ``scale`` times h's norm added at every step (same noise otherwise).
    A decoder whose skips carry the image ignores h and scores near 0."""
    from fairsynth.diffusion.sampling import batch_generator, sample_ddim

    base = sample_ddim(model, n, batch_generator(seed, 0), steps=steps)
    gen = torch.Generator().manual_seed(seed + 1)

    def perturb(h: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(h.shape, generator=gen).to(h)
        dims = tuple(range(1, h.ndim))
        noise = noise / torch.linalg.vector_norm(noise, dim=dims, keepdim=True)
        return h + scale * torch.linalg.vector_norm(h, dim=dims, keepdim=True) * noise

    class _Perturb:
        def begin_step(self, *args) -> None:
            pass

        edit = staticmethod(perturb)

    moved = sample_ddim(
        model, n, batch_generator(seed, 0), steps=steps, guidance=_Perturb(), layer=layer
    )
    return float((moved - base).abs().mean())
