"""Text-to-image backend: Distribution Guidance inside a Stable Diffusion denoising loop.

The loop is diffusers' ``StableDiffusionPipeline`` loop (same prompt encoding, latents, scheduler
step and VAE decode; with guidance strength 0 it gives the pipeline's images), with one change:
a hook on the UNet's ``mid_block`` sees the classifier-free-guidance batch [unconditional,
conditional] and lets the guidance edit the **conditional half only**. The batch statistics
(the ADP's mean prediction) are over the conditional samples; the unconditional half, which the
official code mixes in, is left alone.

A calibration (strength, ADP) is tied to the CFG scale it was made at; the manifest records it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline

from fairsynth.diffusion.device import StepNoise, cpu_noise, timestep_plan
from fairsynth.diffusion.hspace import HSpace
from fairsynth.diffusion.sampling import HSpaceGuidance, SamplerSettings, StepCallback, StepInfo

REQUIRED_FILES = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "scheduler/scheduler_config.json",
)


@dataclass
class TextToImageModel:
    """A Stable Diffusion pipeline's components, sampled with a fixed prompt per call."""

    pipe: StableDiffusionPipeline

    @property
    def unet(self):
        return self.pipe.unet

    @property
    def image_size(self) -> int:
        return int(self.pipe.unet.config.sample_size) * self.pipe.vae_scale_factor


def load_text2image(
    path_or_id: str | Path,
    local_files_only: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TextToImageModel:
    """A diffusers Stable Diffusion folder or hub id (safetensors only, no remote code, no safety
    checker: the verifier judges every image)."""
    path = Path(path_or_id)
    if path.exists():
        missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
        tok = path / "tokenizer"
        if not (tok / "tokenizer.json").is_file() and not (
            (tok / "vocab.json").is_file() and (tok / "merges.txt").is_file()
        ):
            missing.append("tokenizer/tokenizer.json (or vocab.json + merges.txt)")
        if missing:
            raise FileNotFoundError(
                f"text-to-image model folder {path} is missing {', '.join(missing)} "
                "(safetensors weights are required; pickle checkpoints are not loaded)"
            )
    pipe = StableDiffusionPipeline.from_pretrained(
        str(path_or_id),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        use_safetensors=True,
        local_files_only=local_files_only,
        dtype=dtype,
    ).to(device)
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    return TextToImageModel(pipe)


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
        pipe = self.model.pipe
        size = self.image_size // pipe.vae_scale_factor
        shape = (n, pipe.unet.config.in_channels, size, size)
        return cpu_noise(shape, generator, pipe.unet.device)

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
        pipe, n = self.model.pipe, noise.shape[0]
        device, dtype = pipe.unet.device, pipe.unet.dtype
        cfg = self.cfg_scale > 1.0 and pipe.unet.config.time_cond_proj_dim is None
        cond, uncond = pipe.encode_prompt(self.prompt, device, n, cfg, self.negative_prompt)
        embeds = (torch.cat([uncond, cond]) if cfg else cond).to(dtype)
        scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
        scheduler.set_timesteps(settings.steps)
        steps, on_device = timestep_plan(scheduler.timesteps, device)
        # the latents and the scheduler stay in float32; only the UNet and the VAE run in dtype
        latents = noise.float() * scheduler.init_noise_sigma
        eta_noise = StepNoise(latents.shape, generator, device) if settings.eta > 0 else None
        with HSpace(pipe.unet, settings.layer) as hsp:
            if guidance is not None:
                both = self.guide_halves == "both"
                hsp.edit = guidance.edit if both else split_conditional(guidance.edit, n)
            for i, t in enumerate(steps):
                if guidance is not None:
                    guidance.begin_step(on_device[i], i, len(steps))
                x_in = torch.cat([latents] * 2) if cfg else latents
                x_in = scheduler.scale_model_input(x_in, t).to(dtype)
                eps = pipe.unet(
                    x_in, on_device[i], encoder_hidden_states=embeds, return_dict=False
                )[0].float()
                if cfg:
                    eps_u, eps_c = eps.chunk(2)
                    eps = eps_u + self.cfg_scale * (eps_c - eps_u)
                noise_i = eta_noise.next() if eta_noise is not None else None
                step = scheduler.step(eps, t, latents, eta=settings.eta, variance_noise=noise_i)
                latents = step.prev_sample
                if callback is not None:
                    h = hsp.captured
                    h = h[n:] if cfg and h is not None and h.shape[0] == 2 * n else h
                    callback(StepInfo(i, len(steps), t, latents, h))
        latents = (latents / pipe.vae.config.scaling_factor).to(pipe.vae.dtype)
        image = pipe.vae.decode(latents, return_dict=False, generator=generator)[0].float()
        return image.clamp(-1, 1)
