"""The ``verify`` section: which classifiers judge the finished images, and how strictly."""

from __future__ import annotations

from pydantic import Field, field_validator

from fairsynth.app.config.base import (
    AtLeast0,
    AtLeast1,
    ConfigError,
    FreeDict,
    Section,
    Unit,
)


class DeepfaceConfig(Section):
    """deepface as the verifier (see ``fairsynth.verify.deepface`` for the class mapping)."""

    detector: str = "skip"  # skip (aligned crops) | opencv | any deepface backend
    home: str | None = None  # DEEPFACE_HOME (weights in <home>/.deepface/weights); default env/~
    allow_download: bool = False  # never download weights at run time unless this is true
    batch_size: AtLeast1 = 32
    retries: AtLeast0 = 2  # a crashed worker is restarted and the batch retried this many times
    attributes: FreeDict | None = None  # {attribute: {source, classes}}; default gender + race

    @field_validator("attributes", mode="before")
    @classmethod
    def _maps(cls, attributes: object) -> object:
        from fairsynth.verify.deepface_config import attribute_maps

        if attributes is not None:  # None: the default table
            try:
                attribute_maps(attributes, "verify.deepface.attributes")
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
        return attributes


class VerifyConfig(Section):
    verifier: str = "toyfaces"  # toyfaces (shipped) | a classifier folder | deepface
    second: str | None = None  # an independent second verifier: samples must satisfy both
    confidence: Unit = 0.9
    audit_n: AtLeast0 = 256  # labelled reference samples each verifier is audited on (0: none)
    deepface: DeepfaceConfig = Field(default_factory=DeepfaceConfig)
    # Hugging Face image-classification folders: {folder: {attribute: {model label: class}}}
    hf_labels: FreeDict | None = None
    # fill quotas so the set's *true* distribution (estimated through the first verifier's
    # audit confusion) meets the target, not the verifier's count of it
    correct_quotas: bool = False
