"""Names in the params turned into what the library takes: a world's name (``toyfaces``) into
its folder, the model section into a ``ModelSpec``, the sampler and verifier settings into
their spec objects."""

from __future__ import annotations

from fairsynth.app.config.model_section import PromptConfig
from fairsynth.app.config.params import Params
from fairsynth.core.plugins import resolve
from fairsynth.diffusion.device import resolve_device
from fairsynth.diffusion.sampling import SamplerSettings
from fairsynth.diffusion.spec import ModelSpec, PromptSpec
from fairsynth.verify import VerifierSpec


def model_spec(params: Params) -> ModelSpec:
    """The model section resolved; ``device: auto`` here, except for a run on an existing
    cluster (``scale.address``), whose workers resolve it on their own machines."""
    m = params.model
    remote = params.scale.mode == "dask" and params.scale.address
    device = m.device if remote else resolve_device(m.device)
    return ModelSpec(
        str(resolve("model", m.path)), m.kind, m.local_files_only, m.cfg_scale,
        device=device, dtype=m.dtype, compile=m.compile, layer=m.layer, resolution=m.resolution,
    )  # fmt: skip


def prompt_spec(prompt: PromptConfig | None) -> PromptSpec | None:
    return None if prompt is None else PromptSpec(prompt.prompt, prompt.negative_prompt)


def sampler_settings(params: Params) -> SamplerSettings:
    m = params.model
    options = tuple(sorted((m.scheduler_options or {}).items()))
    return SamplerSettings(steps=m.steps, eta=m.eta, layer=m.layer, scheduler=m.scheduler,
                           scheduler_options=options)  # fmt: skip


def verifier_spec(params: Params) -> VerifierSpec:
    v = params.verify

    def folder(name: str | None) -> str | None:
        return None if name is None else str(resolve("verifier", name))

    return VerifierSpec(folder(v.verifier), folder(v.second), v, v.confidence)


def adp_folder(params: Params) -> str:
    return str(resolve("adp", params.adp.path))
