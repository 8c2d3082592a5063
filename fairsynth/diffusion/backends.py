"""The model backends behind one ``sample(n, generator, **kw)`` interface: unconditional
diffusers ``DDPMPipeline`` folders (``DiffusionModel``) and Stable Diffusion bound to a prompt
(``PromptedModel``). Everything above this layer (ADP training, guidance, quota generation,
verification, shards) is the same for both."""

from __future__ import annotations

from fairsynth.app.config import ModelConfig, PromptConfig
from fairsynth.diffusion.unconditional import DiffusionModel, load_diffusion_model
from fairsynth.toyfaces import resolve


def load_model(config: ModelConfig):
    """The configured model: a ``DiffusionModel`` or a ``TextToImageModel``."""
    if config.kind == "text2image":
        from fairsynth.diffusion.text2image import load_text2image

        return load_text2image(config.path, config.local_files_only)
    return load_diffusion_model(resolve("model", config.path), config.local_files_only)


def bind_prompt(model, prompt: PromptConfig | None, cfg_scale: float):
    """An object with ``sample``: the model itself, or a text-to-image model bound to a prompt."""
    if prompt is None:
        if not isinstance(model, DiffusionModel):
            raise ValueError("a text-to-image model needs a prompt (model.prompts)")
        return model
    from fairsynth.diffusion.text2image import PromptedModel

    return PromptedModel(model, prompt.prompt, prompt.negative_prompt, cfg_scale)
