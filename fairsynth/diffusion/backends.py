"""Loading a backend from a resolved model spec: an unconditional diffusers ``DDPMPipeline``
folder (``DiffusionModel``) or Stable Diffusion components bound to a prompt
(``PromptedModel``). Both follow ``sampling.Backend``, so everything above this layer (ADP
training, guidance, quota generation, verification, shards) is the same for both."""

from __future__ import annotations

import torch

from fairsynth.diffusion.compile import compile_around
from fairsynth.diffusion.device import resolve_device, torch_dtype
from fairsynth.diffusion.sampling import Backend
from fairsynth.diffusion.spec import ModelSpec, PromptSpec
from fairsynth.diffusion.unconditional import DiffusionModel, load_diffusion_model


def load_model(spec: ModelSpec):
    """The model: a ``DiffusionModel`` (itself a backend) or a ``TextToImageModel`` (a backend
    once bound to a prompt)."""
    dtype, device = torch_dtype(spec.dtype), resolve_device(spec.device)
    if spec.kind == "text2image":
        from fairsynth.diffusion.text2image import load_text2image

        model = load_text2image(spec.path, spec.local_files_only, device, dtype, spec.resolution)
    else:
        model = load_diffusion_model(spec.path, spec.local_files_only, device, dtype)
    if spec.compile:
        if device.startswith("cuda"):  # the layout cuDNN's convolutions prefer
            model.unet.to(memory_format=torch.channels_last)
        compile_around(model.unet, spec.layer)
    return model


def bind_prompt(model, prompt: PromptSpec | None, cfg_scale: float) -> Backend:
    """The backend for one job: the model itself, or a text-to-image model bound to a prompt."""
    if prompt is None:
        if not isinstance(model, DiffusionModel):
            raise ValueError("a text-to-image model needs a prompt (model.prompts)")
        return model
    from fairsynth.diffusion.text2image import PromptedModel

    return PromptedModel(model, prompt.prompt, prompt.negative_prompt, cfg_scale)
