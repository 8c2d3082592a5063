"""``Params``: the whole file, the rules across its sections, and ``load_params``."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import Field, ValidationError, ValidationInfo, model_validator

from fairsynth.app.config.base import ConfigError, FreeDict, Int, Section, config_error
from fairsynth.app.config.guidance_section import GuidanceParams
from fairsynth.app.config.model_section import ModelConfig, PromptConfig, TargetConfig
from fairsynth.app.config.schema import (
    AdpConfig,
    AuditModelConfig,
    CardConfig,
    DownstreamConfig,
    GenerateConfig,
    OutputConfig,
    ReferenceConfig,
    ScaleConfig,
)
from fairsynth.app.config.verify_section import VerifyConfig
from fairsynth.app.config.yaml_io import yaml_load

_A_PARAMS_FILE = {"params_file": True}  # validation context: run the rules across sections


class Params(Section):
    reference: ReferenceConfig = Field(default_factory=ReferenceConfig)
    audit_model: AuditModelConfig = Field(default_factory=AuditModelConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    attributes: FreeDict | None = None  # {name: [classes]}; default: the toy world's
    target: TargetConfig | None = None
    adp: AdpConfig = Field(default_factory=AdpConfig)
    guidance: GuidanceParams = Field(default_factory=GuidanceParams)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    scale: ScaleConfig = Field(default_factory=ScaleConfig)
    downstream: DownstreamConfig = Field(default_factory=DownstreamConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    seed: Int = 0

    def attribute_space(self):
        from fairsynth.core import plugins
        from fairsynth.core.attributes import AttributeSpace

        return AttributeSpace.from_dict(self.attributes or plugins.provided("attributes"))

    def build_target(self, config: TargetConfig | None = None, key: str = "target"):
        """The target as a distribution over the cells of the guided attributes."""
        from fairsynth.core.attributes import Target

        config = config or self.target
        if config is None:
            raise ConfigError(f"{key}: required for guided generation and evaluation")
        space = self.attribute_space()
        try:
            if config.marginals is not None:
                return Target.from_marginals(space, config.marginals)
            return Target.from_cells(space, config.attributes, config.cells)
        except (ValueError, KeyError) as exc:
            msg = str(exc).strip("'\"")
            if key != "target" and msg.startswith("target"):
                msg = key + msg[len("target") :]
            raise ConfigError(msg if msg.startswith(key) else f"{key}: {msg}") from exc

    def jobs(self) -> list[tuple[PromptConfig | None, object, int]]:
        """(prompt, target, n) per generation job: one for an unconditional model, one per
        prompt for text-to-image (each with its own target and quota total)."""
        if self.model.kind != "text2image":
            return [(None, self.build_target(), self.generate.n)]
        out = []
        names = self.build_target().space.names
        for i, p in enumerate(self.model.prompts or []):
            target = self.build_target(p.target, f"model.prompts[{i}].target")
            if target.space.names != names:
                raise ConfigError(
                    f"model.prompts[{i}].target: must guide the same attributes as 'target'"
                )
            out.append((p, target, p.n or self.generate.n))
        return out

    @model_validator(mode="after")
    def _check_run(self, info: ValidationInfo) -> Params:
        """The rules across sections, for a params file (``parse_params``); not re-run by
        ``replace``, whose derived runs may break them on purpose."""
        if not (info.context or {}).get("params_file"):
            return self
        if self.attributes is not None:
            try:
                self.attribute_space()
            except ValueError as exc:
                raise ConfigError(f"attributes: {exc}") from exc
        if self.target is not None:
            self.build_target()
            asked = sum(n for _, _, n in self.jobs())
            if self.generate.mode == "standalone":
                self.check_budget(asked)
        self._check_no_overlap()
        if self.model.kind == "text2image" and self.generate.mode == "augment":
            raise ConfigError("generate.mode: augment is for unconditional models; use standalone")
        labeller, verifier = self.adp.pseudo_labeller, self.verify.verifier
        if labeller == verifier and labeller != "toyfaces":  # toyfaces: two different models
            raise ConfigError(
                f"adp.pseudo_labeller: {labeller!r} is also the verifier; the verifier must be "
                "independent of the classifier that trains the ADP"
            )
        if self.verify.second is not None and self.verify.second in (verifier, labeller):
            raise ConfigError(
                f"verify.second: {self.verify.second!r} must differ from the verifier and the "
                "pseudo-labeller (an independent second opinion)"
            )
        self._check_verifier_kinds()
        self._check_label_mapping()
        return self

    def _check_label_mapping(self) -> None:
        """``reference.columns`` and ``reference.classes`` speak of the params' attributes, and
        map to their classes."""
        ref, space = self.reference, self.attribute_space()
        for key, table in (("columns", ref.columns or {}), ("classes", ref.classes or {})):
            for name in table:
                if name not in space.names:
                    raise ConfigError(
                        f"reference.{key}.{name}: not an attribute {list(space.names)}"
                    )
        for name, table in (ref.classes or {}).items():
            for theirs, ours in table.items():
                if ours not in space.classes(name):
                    raise ConfigError(
                        f"reference.classes.{name}: {theirs!r} maps to {ours!r}, which is not a "
                        f"class of {name} {list(space.classes(name))}"
                    )

    def check_budget(self, asked: int) -> None:
        """Each accepted sample costs at least one generated: a budget below the samples asked
        cannot fill the quotas (unless a partial set is accepted)."""
        g = self.generate
        if g.budget < asked and not g.accept_partial:
            raise ConfigError(
                f"generate.budget: {g.budget} is below the {asked} samples the quotas ask for; "
                "raise it, or set generate.accept_partial: true to publish a partial set"
            )

    def _check_verifier_kinds(self) -> None:
        """Each classifier value is a kind that may take its role, under the kind's own rules."""
        from fairsynth.verify.kinds import kind_of, settings_for

        roles = {"verifier": ("verify.verifier", self.verify.verifier),
                 "second": ("verify.second", self.verify.second),
                 "pseudo_labeller": ("adp.pseudo_labeller", self.adp.pseudo_labeller)}  # fmt: skip
        for role, (key, value) in roles.items():
            if value is None:
                continue
            kind = kind_of(value)
            if role not in kind.roles:
                raise ConfigError(f"{key}: {value!r} cannot be the {role.replace('_', '-')}")
            if kind.check is not None:
                try:
                    space = self.attribute_space()
                    kind.check(settings_for(kind, self.verify), space, role, value)
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None

    def _check_no_overlap(self) -> None:
        """No folder a run writes may be, hold or sit inside a folder it reads (compared as
        resolved paths, so symlinks and ``..`` do not hide it): it would overwrite its inputs."""
        from fairsynth.core.plugins import resolve
        from fairsynth.verify.kinds import verifier_folder

        inputs = {
            "reference.path": self.reference.path,
            "reference.labels": self.reference.labels,
            "model.path": resolve("model", self.model.path),
            "adp.path": resolve("adp", self.adp.path),
            "adp.pseudo_labeller": verifier_folder(
                resolve("pseudo_labeller", self.adp.pseudo_labeller)
            ),
            "verify.verifier": verifier_folder(resolve("verifier", self.verify.verifier)),
            "verify.second": verifier_folder(resolve("verifier", self.verify.second))
            if self.verify.second
            else None,
        }
        writers = {
            "output.dir": (self.output.dir, inputs),
            "downstream.out": (
                self.downstream.out,
                {"reference.path": self.reference.path, "output.dir": self.output.dir},
            ),
            "downstream.control_dir": (
                self.downstream.control_dir,
                {**inputs, "output.dir": self.output.dir},
            ),
        }
        for out_key, (out_value, reads) in writers.items():
            out = Path(out_value).resolve()
            for key, value in reads.items():
                if value is None:
                    continue
                if key == "model.path" and not Path(value).exists():
                    continue  # a hub id
                p = Path(value).resolve()
                if out == p or out.is_relative_to(p) or p.is_relative_to(out):
                    raise ConfigError(
                        f"{out_key}: {out_value} overlaps {key} ({value}); a folder a run "
                        "writes must not be, hold or sit inside one it reads"
                    )


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found")
    try:
        raw = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc)[:300]}") from exc
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return parse_params(raw)


def parse_params(raw: object) -> Params:
    """``raw`` (a YAML document) as ``Params``, every rule checked; else ``ConfigError``."""
    try:
        return Params.model_validate(raw, context=_A_PARAMS_FILE)
    except ValidationError as exc:
        raise config_error(exc, Params) from None
