"""How each text-to-image pipeline family calls its denoiser: the part of diffusers' pipeline
``__call__`` that differs between Stable Diffusion 1.x/2.x, SDXL, SD3 and Flux (prompt
encoding, latent shape, timesteps, the network call, the VAE decode). The loop itself is
``fairsynth.diffusion.loop.denoise`` for all of them.

Each family follows its pipeline's ``__call__`` line for line, so with guidance off our images
are the pipeline's (tested on tiny random components). h-space is a UNet block's output for
SD and SDXL, and the image-stream token sequence of a transformer block for SD3 and Flux.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import nn

# (x, t on the device) -> the network's output for the scheduler, CFG not yet combined
Predict = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

UNET_FILES = ("unet/config.json", "unet/diffusion_pytorch_model.safetensors")
TRANSFORMER_FILES = ("transformer/config.json", "transformer/diffusion_pytorch_model.safetensors")
VAE_FILES = ("vae/config.json", "vae/diffusion_pytorch_model.safetensors")


def _encoder_files(name: str) -> tuple[str, ...]:
    return (f"{name}/config.json", f"{name}/model.safetensors")


class Family:
    pipeline: ClassVar[str]
    network_name: ClassVar[str] = "unet"
    files: ClassVar[tuple[str, ...]]
    tokenizers: ClassVar[tuple[str, ...]] = ("tokenizer",)
    flow_matching: ClassVar[bool] = False
    negative_prompts: ClassVar[bool] = True

    def network(self, pipe) -> nn.Module:
        return getattr(pipe, self.network_name)

    def default_size(self, pipe) -> int:
        return int(self.network(pipe).config.sample_size) * pipe.vae_scale_factor

    def noise_shape(self, pipe, n: int, size: int) -> tuple[int, ...]:
        s = size // pipe.vae_scale_factor
        return (n, int(self.network(pipe).config.in_channels), s, s)

    def cfg_batch(self, pipe, cfg_scale: float) -> bool:
        return cfg_scale > 1.0

    def encode(self, pipe, prompt: str, negative: str | None, n: int, cfg: bool, size: int) -> dict:
        raise NotImplementedError

    def pack(self, pipe, noise: torch.Tensor) -> torch.Tensor:
        """The initial latents the network denoises, from ``noise_shape`` noise."""
        return noise

    def set_timesteps(self, pipe, scheduler, steps: int, latents: torch.Tensor) -> None:
        scheduler.set_timesteps(steps)

    def predictor(self, pipe, cond: dict, size: int, cfg_scale: float) -> Predict:
        raise NotImplementedError

    def decode(self, pipe, latents: torch.Tensor, size: int, generator) -> torch.Tensor:
        raise NotImplementedError


class StableDiffusion(Family):
    """SD 1.x / 2.x: CLIP text embeddings as cross-attention context."""

    pipeline = "StableDiffusionPipeline"
    files = ("model_index.json", *UNET_FILES, *VAE_FILES, *_encoder_files("text_encoder"),
             "scheduler/scheduler_config.json")  # fmt: skip

    def cfg_batch(self, pipe, cfg_scale: float) -> bool:
        return cfg_scale > 1.0 and pipe.unet.config.time_cond_proj_dim is None

    def encode(self, pipe, prompt, negative, n, cfg, size) -> dict:
        cond, uncond = pipe.encode_prompt(prompt, pipe.unet.device, n, cfg, negative)
        embeds = torch.cat([uncond, cond]) if cfg else cond
        return {"encoder_hidden_states": embeds.to(pipe.unet.dtype)}

    def predictor(self, pipe, cond, size, cfg_scale) -> Predict:
        unet = pipe.unet

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return unet(x.to(unet.dtype), t, **cond, return_dict=False)[0].float()

        return predict

    def decode(self, pipe, latents, size, generator) -> torch.Tensor:
        latents = (latents / pipe.vae.config.scaling_factor).to(pipe.vae.dtype)
        return pipe.vae.decode(latents, return_dict=False, generator=generator)[0].float()


class StableDiffusionXL(StableDiffusion):
    """SDXL: two CLIP text encoders; the second's pooled embedding and the size/crop
    ``time_ids`` go in as added conditioning."""

    pipeline = "StableDiffusionXLPipeline"
    files = (*StableDiffusion.files, *_encoder_files("text_encoder_2"))
    tokenizers = ("tokenizer", "tokenizer_2")

    def encode(self, pipe, prompt, negative, n, cfg, size) -> dict:
        device = pipe.unet.device
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(prompt, None, device, n, cfg, negative)
        if pipe.text_encoder_2 is None:
            projection = int(pooled.shape[-1])
        else:
            projection = pipe.text_encoder_2.config.projection_dim
        size = (size, size)
        time_ids = pipe._get_add_time_ids(
            size, (0, 0), size, dtype=embeds.dtype, text_encoder_projection_dim=projection
        )
        if cfg:
            embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
            time_ids = torch.cat([time_ids, time_ids])
        time_ids = time_ids.to(device).repeat(n, 1)
        dtype = pipe.unet.dtype
        return {
            "encoder_hidden_states": embeds.to(dtype),
            "added_cond_kwargs": {"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)},
        }

    def decode(self, pipe, latents, size, generator) -> torch.Tensor:
        vae = pipe.vae
        mean, std = (
            getattr(vae.config, "latents_mean", None),
            getattr(vae.config, "latents_std", None),
        )
        if mean is not None and std is not None:
            mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
            latents = latents * std / vae.config.scaling_factor + mean
        else:
            latents = latents / vae.config.scaling_factor
        return vae.decode(latents.to(vae.dtype), return_dict=False)[0].float()


class StableDiffusion3(Family):
    """SD3 / 3.5: an MMDiT (``SD3Transformer2DModel``), two CLIP encoders and T5, flow matching
    with classifier-free guidance. h is the image stream of a joint block."""

    pipeline = "StableDiffusion3Pipeline"
    network_name = "transformer"
    files = ("model_index.json", *TRANSFORMER_FILES, *VAE_FILES, *_encoder_files("text_encoder"),
             *_encoder_files("text_encoder_2"), *_encoder_files("text_encoder_3"),
             "scheduler/scheduler_config.json")  # fmt: skip
    tokenizers = ("tokenizer", "tokenizer_2", "tokenizer_3")
    flow_matching = True
    max_sequence_length = 256

    def encode(self, pipe, prompt, negative, n, cfg, size) -> dict:
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt, None, None, pipe.transformer.device, n, cfg, negative,
            max_sequence_length=self.max_sequence_length,
        )  # fmt: skip
        if cfg:
            embeds, pooled = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled])
        dtype = pipe.transformer.dtype
        return {"encoder_hidden_states": embeds.to(dtype), "pooled_projections": pooled.to(dtype)}

    def set_timesteps(self, pipe, scheduler, steps, latents) -> None:
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", None):
            patch = pipe.transformer.config.patch_size
            seq_len = (latents.shape[2] // patch) * (latents.shape[3] // patch)
            kwargs["mu"] = _shift(scheduler, seq_len, 1.16)
        scheduler.set_timesteps(steps, **kwargs)

    def predictor(self, pipe, cond, size, cfg_scale) -> Predict:
        net = pipe.transformer

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return net(hidden_states=x.to(net.dtype), timestep=t.expand(x.shape[0]), **cond,
                       return_dict=False)[0].float()  # fmt: skip

        return predict

    def decode(self, pipe, latents, size, generator) -> torch.Tensor:
        vae = pipe.vae
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        return vae.decode(latents.to(vae.dtype), return_dict=False)[0].float()


class Flux(Family):
    """Flux: a guidance-distilled MMDiT (``FluxTransformer2DModel``): no CFG batch, the CFG
    scale goes in as the embedded guidance value; latents are packed 2x2 into tokens. h is the
    image stream of a double-stream block."""

    pipeline = "FluxPipeline"
    network_name = "transformer"
    files = ("model_index.json", *TRANSFORMER_FILES, *VAE_FILES, *_encoder_files("text_encoder"),
             *_encoder_files("text_encoder_2"), "scheduler/scheduler_config.json")  # fmt: skip
    tokenizers = ("tokenizer", "tokenizer_2")
    flow_matching = True
    negative_prompts = False
    max_sequence_length = 512

    def default_size(self, pipe) -> int:
        return int(pipe.default_sample_size) * pipe.vae_scale_factor

    def noise_shape(self, pipe, n, size) -> tuple[int, ...]:
        s = 2 * (size // (pipe.vae_scale_factor * 2))
        return (n, int(pipe.transformer.config.in_channels) // 4, s, s)

    def cfg_batch(self, pipe, cfg_scale) -> bool:
        return False

    def encode(self, pipe, prompt, negative, n, cfg, size) -> dict:
        device = pipe.transformer.device
        embeds, pooled, text_ids = pipe.encode_prompt(
            prompt, None, device=device, num_images_per_prompt=n,
            max_sequence_length=self.max_sequence_length,
        )  # fmt: skip
        dtype = pipe.transformer.dtype
        return {"encoder_hidden_states": embeds.to(dtype), "pooled_projections": pooled.to(dtype),
                "txt_ids": text_ids}  # fmt: skip

    def pack(self, pipe, noise) -> torch.Tensor:
        n, c, h, w = noise.shape
        return pipe._pack_latents(noise, n, c, h, w)

    def set_timesteps(self, pipe, scheduler, steps, latents) -> None:
        sigmas = np.linspace(1.0, 1 / steps, steps)
        if getattr(scheduler.config, "use_flow_sigmas", False):
            sigmas = None
        mu = _shift(scheduler, latents.shape[1], 1.15)
        if sigmas is None:
            scheduler.set_timesteps(steps, mu=mu)
        else:
            scheduler.set_timesteps(sigmas=sigmas, mu=mu)

    def predictor(self, pipe, cond, size, cfg_scale) -> Predict:
        net = pipe.transformer
        s = size // (pipe.vae_scale_factor * 2)
        device = net.device
        image_ids = pipe._prepare_latent_image_ids(1, s, s, device, net.dtype)
        guidance = None
        if net.config.guidance_embeds:
            guidance = torch.full([1], cfg_scale, device=device, dtype=torch.float32)

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            timestep = t.expand(x.shape[0]).to(x.dtype)
            g = None if guidance is None else guidance.expand(x.shape[0])
            return net(hidden_states=x.to(net.dtype), timestep=timestep / 1000, guidance=g,
                       img_ids=image_ids, **cond, return_dict=False)[0].float()  # fmt: skip

        return predict

    def decode(self, pipe, latents, size, generator) -> torch.Tensor:
        vae = pipe.vae
        latents = pipe._unpack_latents(latents, size, size, pipe.vae_scale_factor)
        latents = latents / vae.config.scaling_factor + vae.config.shift_factor
        return vae.decode(latents.to(vae.dtype), return_dict=False)[0].float()


def _shift(scheduler, seq_len: int, max_shift: float) -> float:
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    c = scheduler.config
    return calculate_shift(seq_len, c.get("base_image_seq_len", 256),
                           c.get("max_image_seq_len", 4096), c.get("base_shift", 0.5),
                           c.get("max_shift", max_shift))  # fmt: skip


FAMILIES: dict[str, Family] = {
    f.pipeline: f for f in (StableDiffusion(), StableDiffusionXL(), StableDiffusion3(), Flux())
}
PIPELINE_WORDS = ", ".join(FAMILIES)


def family_of(pipeline_class: str) -> Family:
    family = FAMILIES.get(pipeline_class)
    if family is None:
        raise ValueError(
            f"text-to-image pipeline {pipeline_class!r} is not supported (use {PIPELINE_WORDS})"
        )
    return family
