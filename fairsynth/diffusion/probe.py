"""Does h-space carry the image? A probe of a backend before an ADP is trained on it."""

from __future__ import annotations

import torch

from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample


def perturbation_sensitivity(
    model, n: int = 32, seed: int = 0, steps: int = 20, scale: float = 4.0, layer: str = "mid_block"
) -> float:
    """How much say h has: mean |Δx| (images in [-1, 1]) between samples with and without a
    random perturbation of ``scale`` times h's norm added at every step (same noise otherwise).
    A decoder whose skips carry the image ignores h and scores near 0."""
    base = sample(model, n, batch_generator(seed, 0), SamplerSettings(steps=steps))
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

    settings = SamplerSettings(steps=steps, layer=layer)
    moved = sample(model, n, batch_generator(seed, 0), settings, guidance=_Perturb())
    return float((moved - base).abs().mean())
