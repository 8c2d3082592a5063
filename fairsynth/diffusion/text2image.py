"""Text-to-image backend: Distribution Guidance inside the denoising loop of Stable Diffusion
1.x/2.x, SDXL, SD3 or Flux (the pipeline class named by the folder's ``model_index.json``).

The loop is the diffusers pipeline's own (same prompt encoding, latents, scheduler step and VAE
decode, ``fairsynth.diffusion.families``; with guidance strength 0 it gives the pipeline's
images), with one change: a hook on the hooked layer (a UNet block, or a transformer block's
image stream) sees the classifier-free-guidance batch [unconditional, conditional] and lets the
guidance edit the **conditional half only** (Flux, guidance-distilled, has no CFG batch). The batch statistics
(the ADP's mean prediction) are over the conditional samples; the unconditional half, which the
official code mixes in, is left alone.

A calibration (strength, ADP) is tied to the CFG scale it was made at; the manifest records it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from fairsynth.diffusion.device import cpu_noise
from fairsynth.diffusion.families import Family, family_of
from fairsynth.diffusion.loop import Denoiser, denoise
from fairsynth.diffusion.safetensors_check import check_folder
from fairsynth.diffusion.sampling import HSpaceGuidance, SamplerSettings, StepCallback
from fairsynth.diffusion.schedulers import make_scheduler

# (the SD 1.x layout; each family lists its own: ``fairsynth.diffusion.families``)
REQUIRED_FILES = family_of("StableDiffusionPipeline").files


@dataclass
class TextToImageModel:
    """A text-to-image pipeline's components (SD, SDXL, SD3 or Flux), sampled with a fixed
    prompt per call; ``resolution``: the image side (default: the pipeline's own)."""

    pipe: object
    family: Family
    resolution: int | None = None

    @property
    def unet(self):
        """The denoising network (a UNet, or SD3's and Flux's transformer)."""
        return self.family.network(self.pipe)

    @property
    def image_size(self) -> int:
        return self.resolution or self.family.default_size(self.pipe)


def pipeline_class(path_or_id: str | Path, local_files_only: bool = True) -> str:
    """The ``_class_name`` of a pipeline folder's (or cached hub id's) ``model_index.json``."""
    path = Path(path_or_id)
    if path.exists():
        index = path / "model_index.json"
        if not index.is_file():  # then the missing files are listed as for SD 1.x
            return "StableDiffusionPipeline"
        try:
            return str(json.loads(index.read_text())["_class_name"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{index}: not a diffusers model index ({exc})") from None
    from diffusers import DiffusionPipeline

    try:
        config = DiffusionPipeline.load_config(str(path_or_id), local_files_only=local_files_only)
    except OSError as exc:
        where = "in the local Hugging Face cache" if local_files_only else "locally or on the hub"
        raise FileNotFoundError(f"model {str(path_or_id)!r} was not found {where}") from exc
    return str(config["_class_name"])


def missing_files(path: Path, family: Family) -> list[str]:
    """The files of ``family``'s layout that ``path`` lacks (each tokenizer as tokenizer.json,
    or vocab.json + merges.txt for CLIP, or spiece.model for T5)."""
    missing = [f for f in family.files if not (path / f).is_file()]
    for name in family.tokenizers:
        tok = path / name
        if not any(
            all((tok / f).is_file() for f in files)
            for files in (("tokenizer.json",), ("vocab.json", "merges.txt"), ("spiece.model",))
        ):
            missing.append(f"{name}/tokenizer.json (or vocab.json + merges.txt)")
    return missing


def load_text2image(
    path_or_id: str | Path,
    local_files_only: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    resolution: int | None = None,
) -> TextToImageModel:
    """A diffusers SD 1.x/2.x, SDXL, SD3 or Flux folder or hub id (safetensors only, no remote
    code, no safety checker or watermark: the verifier judges every image)."""
    import diffusers

    name = pipeline_class(path_or_id, local_files_only)
    family = family_of(name)
    path = Path(path_or_id)
    if path.exists():
        missing = missing_files(path, family)
        if missing:
            raise FileNotFoundError(
                f"text-to-image model folder {path} is missing {', '.join(missing)} "
                "(safetensors weights are required; pickle checkpoints are not loaded)"
            )
        check_folder(path, family.files)
    extra = {}
    if name == "StableDiffusionPipeline":
        extra = dict(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    elif name == "StableDiffusionXLPipeline":
        extra = dict(add_watermarker=False)
    pipe = getattr(diffusers, name).from_pretrained(
        str(path_or_id), use_safetensors=True, local_files_only=local_files_only, dtype=dtype,
        **extra,
    ).to(device)  # fmt: skip
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # SDXL's VAE overflows in float16 (diffusers upcasts it too)
    pipe.set_progress_bar_config(disable=True)
    for m in pipe.components.values():
        if isinstance(m, torch.nn.Module):
            m.eval().requires_grad_(False)
    if resolution is not None and resolution % (pipe.vae_scale_factor * 2):
        raise ValueError(
            f"model.resolution: {resolution} is not a multiple of {pipe.vae_scale_factor * 2}"
        )
    return TextToImageModel(pipe, family, resolution)


CFG_HALVES = ("conditional", "both")


def split_conditional(edit: Callable[[torch.Tensor], torch.Tensor], n: int):
    """An h edit for a CFG batch [uncond (n), cond (n)]: ``edit`` sees and changes the
    conditional half only."""

    def cfg_edit(h: torch.Tensor) -> torch.Tensor:
        if h.shape[0] != 2 * n:
            return edit(h)  # no CFG: the whole batch is conditional
        return torch.cat([h[:n], edit(h[n:])])

    return cfg_edit


@dataclass
class PromptedModel:
    """A text-to-image model bound to one prompt and CFG scale: a backend like the
    unconditional ``DiffusionModel``, so everything above this layer stays the same."""

    model: TextToImageModel
    prompt: str
    negative_prompt: str | None = None
    cfg_scale: float = 7.5
    # "both": the edit sees the whole CFG batch, its statistics over both halves (the official
    # code's way, kept for comparison); "conditional": the conditional half only
    guide_halves: str = "conditional"

    def __post_init__(self) -> None:
        if self.negative_prompt and not self.model.family.negative_prompts:
            raise ValueError(
                f"{self.model.family.pipeline} is guidance-distilled and takes no negative prompt "
                f"(prompt {self.prompt!r})"
            )
        if self.guide_halves not in CFG_HALVES:
            raise ValueError(f"guide_halves must be one of {CFG_HALVES}, got {self.guide_halves!r}")

    @property
    def unet(self):
        return self.model.unet

    @property
    def image_size(self) -> int:
        return self.model.image_size

    @property
    def provenance(self) -> dict:
        """Recorded per sample in the manifest (a calibration at one CFG scale does not carry)."""
        return {
            "prompt": self.prompt,
            "negative_prompt": self.negative_prompt,
            "cfg_scale": self.cfg_scale,
        }

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        m = self.model
        shape = m.family.noise_shape(m.pipe, n, m.image_size)
        return cpu_noise(shape, generator, m.unet.device)

    @torch.no_grad()
    def sample(
        self,
        noise: torch.Tensor,
        settings: SamplerSettings,
        generator: torch.Generator,
        callback: StepCallback | None = None,
        guidance: HSpaceGuidance | None = None,
    ) -> torch.Tensor:
        """Images in [-1, 1], (n, 3, H, W), for the bound prompt. ``callback`` gets each step's
        latents and the conditional half of h (``StepInfo.h``)."""
        family, pipe, size = self.model.family, self.model.pipe, self.model.image_size
        n = noise.shape[0]
        cfg = family.cfg_batch(pipe, self.cfg_scale)
        cond = family.encode(pipe, self.prompt, self.negative_prompt, n, cfg, size)
        latents = family.pack(pipe, noise)
        own = {**pipe.scheduler.config, "_class_name": type(pipe.scheduler).__name__}
        options = dict(settings.scheduler_options)
        scheduler = make_scheduler(settings.scheduler, own, options, family.flow_matching)
        family.set_timesteps(pipe, scheduler, settings.steps, latents)
        network_call = family.predictor(pipe, cond, size, self.cfg_scale)
        scale = self.cfg_scale

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            if not cfg:
                return network_call(x, t)
            out_u, out_c = network_call(torch.cat([x] * 2), t).chunk(2)
            return out_u + scale * (out_c - out_u)

        doubled = cfg and self.guide_halves == "conditional"
        denoiser = Denoiser(
            predict, self.model.unet, scheduler,
            wrap_edit=(lambda edit: split_conditional(edit, n)) if doubled else None,
            view_h=(lambda h: h[n:] if h.shape[0] == 2 * n else h) if cfg else None,
        )  # fmt: skip
        latents = denoise(denoiser, latents, settings, generator, guidance, callback)
        return family.decode(pipe, latents, size, generator).clamp(-1, 1)
