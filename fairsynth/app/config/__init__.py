"""``params.yaml`` -> typed, validated objects (pydantic models). Errors name the offending key.

``yaml_io``: the bounded YAML 1.2 loader; ``base``: ``ConfigError`` and pydantic's errors as
one keyed line, the section base class and checked types; ``model_section``,
``guidance_section`` (``GuidanceConfig`` as params: its defaults are the shipped ones),
``verify_section`` and ``schema`` (the other sections); ``params``: ``Params``, the rules
across sections, ``load_params`` / ``parse_params``."""

from fairsynth.app.config.base import MAX_INT, ConfigError, as_dict, replace
from fairsynth.app.config.guidance_section import GuidanceParams
from fairsynth.app.config.model_section import MODEL_KINDS, ModelConfig, PromptConfig, TargetConfig
from fairsynth.app.config.params import Params, load_params, parse_params
from fairsynth.app.config.schema import (
    REFERENCE_SOURCES,
    SCALE_MODES,
    AdpConfig,
    AuditModelConfig,
    DownstreamConfig,
    GenerateConfig,
    HardSetting,
    OutputConfig,
    ReferenceConfig,
    ScaleConfig,
)
from fairsynth.app.config.verify_section import DeepfaceConfig, VerifyConfig
from fairsynth.app.config.yaml_io import MAX_PARAMS_BYTES, MAX_YAML_NODES, yaml_load

__all__ = [
    "MAX_INT",
    "MAX_PARAMS_BYTES",
    "MAX_YAML_NODES",
    "MODEL_KINDS",
    "REFERENCE_SOURCES",
    "SCALE_MODES",
    "AdpConfig",
    "AuditModelConfig",
    "ConfigError",
    "DeepfaceConfig",
    "DownstreamConfig",
    "HardSetting",
    "GenerateConfig",
    "GuidanceParams",
    "ModelConfig",
    "OutputConfig",
    "Params",
    "PromptConfig",
    "ReferenceConfig",
    "ScaleConfig",
    "TargetConfig",
    "VerifyConfig",
    "as_dict",
    "load_params",
    "parse_params",
    "replace",
    "yaml_load",
]
