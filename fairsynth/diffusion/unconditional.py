"""Loading and saving unconditional pixel-space diffusion models (diffusers layout).

A model folder follows diffusers' ``DDPMPipeline`` layout (``model_index.json``, ``unet/``,
``scheduler/``), as e.g. ``google/ddpm-celebahq-256`` does, plus an optional ``fairsynth.json``
with settings diffusers has no place for: ``pixel_unshuffle`` (the toy model runs its UNet on
2x pixel-unshuffled images, 32x32x3 -> 16x16x12, which is 4x cheaper on a CPU).

Only safetensors weights are loaded; remote code is never enabled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel

from fairsynth.diffusion.device import cpu_noise
from fairsynth.diffusion.loop import Denoiser, denoise
from fairsynth.diffusion.safetensors_check import check_folder
from fairsynth.diffusion.sampling import HSpaceGuidance, SamplerSettings, StepCallback
from fairsynth.diffusion.schedulers import make_scheduler
from fairsynth.diffusion.spec import EXTRA_CONFIG


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
        """The configured scheduler from ``noise``: images in [-1, 1], (n, c, h, w);
        ``guidance`` edits h-space (the output of ``settings.layer``) inside each UNet call."""
        options = dict(settings.scheduler_options)
        scheduler = make_scheduler(settings.scheduler, self.scheduler_config, options)
        scheduler.set_timesteps(settings.steps)
        unet = self.unet

        def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return unet(x.to(unet.dtype), t).sample.float()

        x = denoise(
            Denoiser(predict, unet, scheduler), noise, settings, generator, guidance, callback
        )
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
        check_folder(path, ("unet/diffusion_pytorch_model.safetensors",))
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
