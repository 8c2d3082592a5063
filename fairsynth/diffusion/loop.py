"""The one denoising loop every backend runs (k-diffusion's lesson: one loop, backends differ
only in how they call their network).

A backend hands in ``predict(x, t) -> model output`` (its network call, classifier-free
guidance already combined), a scheduler whose timesteps are set, and the network whose layer
``settings.layer`` is hooked. The loop keeps the latents and the scheduler in float32, tells
the guidance each step before the network call, lets it edit h inside the call, and reports
each step to the callback.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from fairsynth.diffusion.device import StepNoise, timestep_plan
from fairsynth.diffusion.hspace import HEdit, HSpace
from fairsynth.diffusion.sampling import HSpaceGuidance, SamplerSettings, StepCallback, StepInfo
from fairsynth.diffusion.schedulers import init_sigma, scale_input

Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, t) -> model output


def step_function(
    scheduler, eta: float, generator: torch.Generator, shape: tuple[int, ...], device
) -> Callable[[torch.Tensor, object, torch.Tensor], torch.Tensor]:
    """``step(model_output, t, x) -> x_prev`` for one batch. Stochastic steps draw their noise
    from the batch's CPU generator, so a seed means the same on every device: DDIM with
    ``eta`` and DPM-Solver's SDE variants take it pre-drawn (``variance_noise``, see
    ``StepNoise``); every other scheduler draws it from the generator where its step takes one."""
    params = inspect.signature(scheduler.step).parameters
    kwargs: dict = {}
    pre_drawn = None
    if "eta" in params and "variance_noise" in params:  # DDIM
        kwargs["eta"] = eta
        if eta > 0:
            pre_drawn = StepNoise(shape, generator, device)
    elif "variance_noise" in params:
        if str(getattr(scheduler.config, "algorithm_type", "")).startswith("sde"):
            pre_drawn = StepNoise(shape, generator, device)
    elif "generator" in params:
        kwargs["generator"] = generator

    def step(model_output: torch.Tensor, t, x: torch.Tensor) -> torch.Tensor:
        if pre_drawn is not None:
            kwargs["variance_noise"] = pre_drawn.next()
        return scheduler.step(model_output, t, x, **kwargs).prev_sample

    return step


@dataclass(frozen=True)
class Denoiser:
    """What one backend denoises with: ``predict(x, t)`` (the noise or velocity prediction,
    classifier-free guidance included), the ``network`` whose layer h-space is hooked, and its
    ``scheduler``. ``wrap_edit`` adapts the guidance's edit to the network's batch (e.g. the
    conditional half of a CFG batch only); ``view_h`` picks what a callback sees of h."""

    predict: Predict
    network: nn.Module
    scheduler: object
    wrap_edit: Callable[[HEdit], HEdit] | None = None
    view_h: Callable[[torch.Tensor], torch.Tensor] | None = None


def denoise(
    denoiser: Denoiser,
    noise: torch.Tensor,
    settings: SamplerSettings,
    generator: torch.Generator,
    guidance: HSpaceGuidance | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """The final latents from ``noise`` (scaled by the scheduler's initial sigma)."""
    predict, network, scheduler = denoiser.predict, denoiser.network, denoiser.scheduler
    wrap_edit, view_h = denoiser.wrap_edit, denoiser.view_h
    steps, on_device = timestep_plan(scheduler.timesteps, noise.device)
    x = noise.float() * init_sigma(scheduler)
    step = step_function(scheduler, settings.eta, generator, tuple(x.shape), x.device)
    hooked = guidance is not None or callback is not None
    hook = HSpace(network, settings.layer) if hooked else nullcontext()
    with hook:
        if guidance is not None:
            hook.edit = guidance.edit if wrap_edit is None else wrap_edit(guidance.edit)
        for i, t in enumerate(steps):
            if guidance is not None:
                guidance.begin_step(on_device[i], i, len(steps))
            out = predict(scale_input(scheduler, x, t), on_device[i])
            x = step(out, t, x)
            if callback is not None:
                h = hook.captured
                if h is not None and view_h is not None:
                    h = view_h(h)
                callback(StepInfo(i, len(steps), t, x, h))
    return x
