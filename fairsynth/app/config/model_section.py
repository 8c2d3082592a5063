"""The ``model`` section of ``params.yaml`` and what it holds (prompts and their targets)."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fairsynth.app.config.base import (
    AtLeast1,
    FreeDict,
    FreeList,
    Int,
    Invalid,
    Number,
    Section,
    Unit,
    worded,
)
from fairsynth.core.devices import DEVICE_PATTERN, DEVICE_WORDS

ModelKind = Literal["unconditional", "text2image"]
Dtype = Literal["float32", "bfloat16", "float16"]
MODEL_KINDS = typing.get_args(ModelKind)
DTYPE_NAMES = typing.get_args(Dtype)
# where a model runs and how: they change the engine, not what the params ask for
ENGINE_KEYS = ("device", "dtype", "compile")
# model keys added later: unset, they leave every hash and fingerprint as it was before them
LATER_MODEL_KEYS = ("scheduler", "scheduler_options", "resolution")


class TargetConfig(Section):
    """Either ``marginals`` (independent per attribute) or ``cells`` over ``attributes``."""

    marginals: FreeDict | None = None
    attributes: FreeList | None = None
    cells: FreeDict | None = None

    @model_validator(mode="after")
    def _one_form(self) -> TargetConfig:
        if (self.marginals is None) == (self.cells is None):
            raise Invalid("give exactly one of 'marginals' or 'cells' (with 'attributes')")
        if self.cells is not None and not self.attributes:
            raise Invalid("required with 'cells'", "attributes")
        return self


class PromptConfig(Section):
    """One text-to-image prompt with its own target and quota total (defaults: the top-level
    ``target`` and ``generate.n``)."""

    prompt: str
    negative_prompt: str | None = None
    n: AtLeast1 | None = None
    target: TargetConfig | None = None

    @field_validator("prompt")
    @classmethod
    def _not_blank(cls, prompt: str) -> str:
        if not prompt.strip():
            raise Invalid("must not be empty")
        return prompt


class ModelConfig(Section):
    path: str = "toyfaces"  # "toyfaces" = the shipped DDPM; else a folder or hub id
    kind: Annotated[  # unconditional (DDPMPipeline layout) | text2image (SD)
        ModelKind, worded(f"must be one of {MODEL_KINDS}")
    ] = "unconditional"
    steps: AtLeast1 = 50
    eta: Unit = 1.0
    layer: str = "mid_block"
    local_files_only: bool = True
    cfg_scale: Annotated[Number, Field(ge=0)] = 7.5  # text2image: classifier-free guidance scale
    prompts: list[PromptConfig] | None = None  # text2image: what to generate
    device: str = "auto"  # auto (CUDA when available, else CPU) | cpu | cuda | cuda:N | mps
    dtype: Annotated[Dtype, worded(f"must be one of {DTYPE_NAMES}, got {{value}}")] = "float32"
    compile: bool = False  # torch.compile the UNet's blocks (not the hooked layer)
    # a fairsynth.diffusion.schedulers name (ddim, dpmsolver++, euler_ancestral, ...), "model"
    # (the folder's own) or a diffusers class name; default: ddim, the model's own for SD3/Flux
    scheduler: str | None = None
    scheduler_options: FreeDict | None = None  # e.g. {solver_order: 2, use_karras_sigmas: true}
    resolution: Annotated[Int, Field(ge=8)] | None = (
        None  # text2image: image side (default: the model's)
    )

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, name: str | None) -> str | None:
        from fairsynth.diffusion.schedulers import MODEL_OWN, scheduler_class

        if name is not None and name != MODEL_OWN:
            try:
                scheduler_class(name)
            except ValueError as exc:
                raise Invalid(str(exc)) from None
        return name

    @model_validator(mode="after")
    def _scheduler_options(self) -> ModelConfig:
        from fairsynth.diffusion.schedulers import MODEL_OWN, check_options

        if self.scheduler_options and self.scheduler not in (None, MODEL_OWN):
            try:  # (the folder's own class is checked when the model is loaded)
                check_options(self.scheduler, self.scheduler_options)
            except ValueError as exc:
                raise Invalid(str(exc), "scheduler_options") from None
        if self.resolution is not None and self.kind != "text2image":
            raise Invalid("only for kind: text2image", "resolution")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if not DEVICE_PATTERN.match(device):
            raise Invalid(f"must be {DEVICE_WORDS}, got {device!r}")
        return device

    @model_validator(mode="after")
    def _prompts(self) -> ModelConfig:
        if self.kind == "text2image" and not self.prompts:
            raise Invalid("text2image needs at least one prompt", "prompts")
        if self.kind != "text2image" and self.prompts:
            raise Invalid("only for kind: text2image", "prompts")
        return self
