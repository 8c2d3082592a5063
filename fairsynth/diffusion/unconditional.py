"""Loading and saving unconditional pixel-space diffusion models (diffusers layout).

A model folder follows diffusers' ``DDPMPipeline`` layout (``model_index.json``, ``unet/``,
``scheduler/``), as e.g. ``google/ddpm-celebahq-256`` does, plus an optional ``fairsynth.json``
with settings diffusers has no place for: ``pixel_unshuffle`` (the toy model runs its UNet on
2x pixel-unshuffled images, 32x32x3 -> 16x16x12, which is 4x cheaper on a CPU).

Only safetensors weights are loaded; remote code is never enabled.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DModel

from fairsynth.diffusion.device import StepNoise, cpu_noise, timestep_plan
from fairsynth.diffusion.hspace import HSpace
from fairsynth.diffusion.sampling import HSpaceGuidance, SamplerSettings, StepCallback, StepInfo

EXTRA_CONFIG = "fairsynth.json"


@dataclass
class DiffusionModel:
    unet: UNet2DModel
    scheduler_config: dict
    pixel_unshuffle: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        return int(self.unet.config.sample_size) * self.pixel_unshuffle

    @property
    def image_channels(self) -> int:
        return int(self.unet.config.in_channels) // (self.pixel_unshuffle**2)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        s = int(self.unet.config.sample_size)
        return (int(self.unet.config.in_channels), s, s)

    def to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], (n, c, h, w) -> the tensor the UNet denoises."""
        if self.pixel_unshuffle == 1:
            return images
        return F.pixel_unshuffle(images, self.pixel_unshuffle).contiguous()

    def to_image_space(self, x: torch.Tensor) -> torch.Tensor:
        if self.pixel_unshuffle == 1:
            return x
        return F.pixel_shuffle(x, self.pixel_unshuffle).contiguous()

    def ddim_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler.from_config(self.scheduler_config)

    def noise(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return cpu_noise((n, *self.latent_shape), generator, self.unet.device)

    @torch.no_grad()
    def sample(
        self,
        noise: torch.Tensor,
        settings: SamplerSettings,
        generator: torch.Generator,
        callback: StepCallback | None = None,
        guidance: HSpaceGuidance | None = None,
    ) -> torch.Tensor:
        """DDIM from ``noise``: images in [-1, 1], (n, c, h, w); ``guidance`` edits h-space (the
        output of ``settings.layer``) inside each UNet call."""
        scheduler = self.ddim_scheduler()
        scheduler.set_timesteps(settings.steps)
        steps, on_device = timestep_plan(scheduler.timesteps, self.unet.device)
        # the latents and the scheduler stay in float32; only the UNet runs in its dtype
        x = noise.float() * scheduler.init_noise_sigma
        eta_noise = StepNoise(x.shape, generator, x.device) if settings.eta > 0 else None
        hooked = guidance is not None or callback is not None
        hook = HSpace(self.unet, settings.layer) if hooked else nullcontext()
        with hook:
            if guidance is not None:
                hook.edit = guidance.edit
            for i, t in enumerate(steps):
                if guidance is not None:
                    guidance.begin_step(on_device[i], i, len(steps))
                eps = self.unet(x.to(self.unet.dtype), on_device[i]).sample.float()
                noise_i = eta_noise.next() if eta_noise is not None else None
                x = scheduler.step(eps, t, x, eta=settings.eta, variance_noise=noise_i).prev_sample
                if callback is not None:
                    callback(StepInfo(i, len(steps), t, x, hook.captured))
        return self.to_image_space(x).clamp(-1, 1)

    @property
    def provenance(self) -> dict:
        return {}

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.unet.save_pretrained(path / "unet", safe_serialization=True)
        sched_dir = path / "scheduler"
        sched_dir.mkdir(exist_ok=True)
        config = dict(self.scheduler_config)
        if "_use_default_values" in config:  # a set in diffusers: sorted, so saves are stable
            config["_use_default_values"] = sorted(config["_use_default_values"])
        (sched_dir / "scheduler_config.json").write_text(
            json.dumps(config, indent=2, sort_keys=True)
        )
        index = {
            "_class_name": "DDPMPipeline",
            "_diffusers_version": self.unet.config.get("_diffusers_version", "0.42.1"),
            "scheduler": ["diffusers", self.scheduler_config.get("_class_name", "DDPMScheduler")],
            "unet": ["diffusers", "UNet2DModel"],
        }
        (path / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True))
        extra = {"pixel_unshuffle": self.pixel_unshuffle, **self.extra}
        (path / EXTRA_CONFIG).write_text(json.dumps(extra, indent=2, sort_keys=True))


def load_diffusion_model(
    path_or_id: str | Path,
    local_files_only: bool = True,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> DiffusionModel:
    """Load a DDPMPipeline-layout folder (or, with ``local_files_only=False``, a hub id)."""
    path = Path(path_or_id)
    if path.exists():
        missing = [
            p
            for p in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors")
            if not (path / p).is_file()
        ]
        sched = path / "scheduler" / "scheduler_config.json"
        if not sched.is_file():
            missing.append("scheduler/scheduler_config.json")
        if missing:
            raise FileNotFoundError(
                f"model folder {path} is missing {', '.join(missing)} "
                "(safetensors weights are required; pickle checkpoints are not loaded)"
            )
        scheduler_config = json.loads(sched.read_text())
        extra_path = path / EXTRA_CONFIG
        extra = json.loads(extra_path.read_text()) if extra_path.is_file() else {}
    else:
        from diffusers import DDPMScheduler

        text = str(path_or_id)
        if text.startswith((".", "/", "~")) or text.count("/") != 1:
            raise FileNotFoundError(f"model folder {text} does not exist")
        try:
            scheduler_config = dict(
                DDPMScheduler.load_config(
                    text, subfolder="scheduler", local_files_only=local_files_only
                )
            )
        except OSError as exc:
            where = (
                "in the local Hugging Face cache" if local_files_only else "locally or on the hub"
            )
            raise FileNotFoundError(
                f"model {text!r} was not found {where}; put it in a local folder "
                "(unet/, scheduler/) or allow downloads with model.local_files_only: false"
            ) from exc
        extra = {}
    unet = UNet2DModel.from_pretrained(
        str(path_or_id),
        subfolder="unet",
        use_safetensors=True,
        local_files_only=local_files_only,
    ).to(device)
    if dtype != torch.float32:  # (diffusers warns about any dtype cast, float32 included)
        unet.to(dtype)
    unet.eval().requires_grad_(False)
    factor = int(extra.pop("pixel_unshuffle", 1))
    return DiffusionModel(unet, scheduler_config, factor, extra)
