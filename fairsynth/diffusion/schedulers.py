"""Any diffusers scheduler, by a short name or its class name, built from the model's own
scheduler config (its betas, timestep count and prediction type) plus a few options.

    ddim (default)    DDIMScheduler; ``model.eta`` is its eta
    ddpm              DDPMScheduler (ancestral, as trained)
    dpmsolver++       DPMSolverMultistepScheduler, deterministic
    dpmsolver++-sde   DPMSolverMultistepScheduler, algorithm_type sde-dpmsolver++
    euler             EulerDiscreteScheduler
    euler_ancestral   EulerAncestralDiscreteScheduler
    unipc             UniPCMultistepScheduler
    flow_match_euler  FlowMatchEulerDiscreteScheduler (SD3, Flux)
    model             the class the model folder names (SD3 and Flux default to it)
    <ClassName>       any other diffusers scheduler, e.g. LMSDiscreteScheduler

Options (``model.scheduler_options``, e.g. ``{solver_order: 2, use_karras_sigmas: true}``) go
to ``from_config`` on top of the model's config; an option the class does not take is an error
naming it, never silently ignored (diffusers would ignore it).

How a step is called (its noise drawn from the batch's CPU generator) is the loop's business:
``fairsynth.diffusion.loop.step_function``.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torch

SCHEDULERS: dict[str, tuple[str, dict]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpmsolver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    "dpmsolver++-sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "flow_match_euler": ("FlowMatchEulerDiscreteScheduler", {}),
}
MODEL_OWN = "model"
NAMES_WORDS = f"{', '.join(SCHEDULERS)}, {MODEL_OWN} or a diffusers scheduler class name"


def scheduler_class(name: str, model_class: str | None = None) -> type:
    """The diffusers class of ``name`` (a short name, ``model`` with the folder's own class
    ``model_class``, or a class name). A ValueError names the choices."""
    import diffusers
    from diffusers import SchedulerMixin

    if name == MODEL_OWN:
        if not model_class:
            raise ValueError("the model folder names no scheduler class")
        class_name = model_class
    else:
        class_name = SCHEDULERS.get(name, (name, {}))[0]
    try:
        cls = getattr(diffusers, class_name, None)
    except ImportError as exc:  # a class whose optional dependency is missing
        raise ValueError(
            f"scheduler {name!r} needs a package that is not installed: {exc}"
        ) from None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ValueError(f"unknown scheduler {name!r}: use {NAMES_WORDS}")
    return cls


def check_options(name: str, options: Mapping[str, object], model_class: str | None = None):
    """Refuse options the scheduler's constructor does not take (one line naming them)."""
    cls = scheduler_class(name, model_class)
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"{cls.__name__} takes no option {', '.join(map(repr, unknown))} "
            f"(it takes {', '.join(sorted(accepted))})"
        )


def make_scheduler(
    name: str | None,
    model_config: Mapping,
    options: Mapping[str, object] = (),
    flow_matching: bool = False,
):
    """A fresh scheduler of ``name`` on the model's config, with the preset's and the user's
    options on top. ``None``: ddim, or the model's own for a flow-matching model, which refuses
    schedulers of the other kind (their timesteps and parameterisation do not fit)."""
    options = dict(options)
    model_class = model_config.get("_class_name")
    if name is None:
        name = MODEL_OWN if flow_matching else "ddim"
    check_options(name, options, model_class)
    is_flow = "FlowMatch" in scheduler_class(name, model_class).__name__
    if is_flow != flow_matching:
        kind = "a flow-matching" if flow_matching else "a noise-prediction (DDPM-family)"
        raise ValueError(
            f"scheduler {name!r} does not fit {kind} model: use "
            + ("flow_match_euler or model" if flow_matching else "ddim, dpmsolver++, euler…")
        )
    cls = scheduler_class(name, model_class)
    preset = {} if name == MODEL_OWN else SCHEDULERS.get(name, (None, {}))[1]
    return cls.from_config(dict(model_config), **{**preset, **options})


def scale_input(scheduler, x: torch.Tensor, t) -> torch.Tensor:
    """``scheduler.scale_model_input`` where it has one (Euler and friends divide by the
    sigma's norm; DDIM's is the identity; flow-matching schedulers have none)."""
    scale = getattr(scheduler, "scale_model_input", None)
    return x if scale is None else scale(x, t)


def init_sigma(scheduler) -> float:
    return float(getattr(scheduler, "init_noise_sigma", 1.0))
