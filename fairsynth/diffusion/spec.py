"""Which model a run uses, resolved: a folder or hub id (a world's name already turned into its
folder), its kind, and for text-to-image the prompt of each job."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# a model folder's settings diffusers has no place for (pixel_unshuffle, training record)
EXTRA_CONFIG = "fairsynth.json"


@dataclass(frozen=True)
class ModelSpec:
    path: str | Path  # a folder, or a hub id (a world's name already resolved to its folder)
    kind: Literal["unconditional", "text2image"] = "unconditional"
    local_files_only: bool = True
    cfg_scale: float = 7.5  # text2image: classifier-free guidance scale
    device: str = "cpu"  # cpu | cuda | cuda:N | mps; "auto" only for workers to resolve
    dtype: str = "float32"  # the UNet's (and VAE's, text encoder's); ADP and guidance: float32
    compile: bool = False  # torch.compile the UNet around the hooked layer
    layer: str = "mid_block"  # the hooked layer (left uncompiled, so its hook keeps working)
    resolution: int | None = None  # text2image: the image side (None: the pipeline's default)


@dataclass(frozen=True)
class PromptSpec:
    prompt: str
    negative_prompt: str | None = None
