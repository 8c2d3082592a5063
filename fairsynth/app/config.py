"""``params.yaml`` -> typed, validated objects. Errors name the offending key."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. Class names such as ``no``/``yes`` stay strings."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.copy().items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


MAX_PARAMS_BYTES = 1 << 20  # a params file is a few KB
MAX_YAML_NODES = 100_000  # after aliases are expanded: an alias bomb expands exponentially


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    """Mappings refuse a repeated key (YAML would silently keep the last one)."""
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base`: merged keys may be overridden, that is its point
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            hash(key)
        except TypeError:
            raise ConfigError(f"line {line}: a mapping key must be a plain value") from None
        if key in seen:
            raise ConfigError(
                f"duplicate key {_short(key)} (lines {seen[key]} and {line}); give each key once"
            )
        seen[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(node: yaml.Node, limit: int) -> int:
    """Nodes of the document once every alias is expanded (stops counting past ``limit``)."""
    memo: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in memo:
            return memo[id(n)]
        if id(n) in active:
            return limit + 1  # a recursive structure: infinite once expanded
        active.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            children = n.value
        elif isinstance(n, yaml.MappingNode):
            children = [c for pair in n.value for c in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > limit:
                break
        active.discard(id(n))
        memo[id(n)] = total
        return total

    return size(node)


def yaml_load(text: str):
    """YAML 1.2 booleans, no repeated keys, and bounded size: the document's bytes and its
    nodes after alias expansion are checked before any object is built."""
    if len(text) > MAX_PARAMS_BYTES:
        raise ConfigError(f"params: {len(text):,} bytes, more than {MAX_PARAMS_BYTES:,} allowed")
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_YAML_NODES) > MAX_YAML_NODES:
            raise ConfigError(
                f"params: more than {MAX_YAML_NODES:,} values once aliases are expanded "
                "(an alias bomb?)"
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _short(value: object, limit: int = 80) -> str:
    """``repr`` of a value for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class ConfigError(ValueError):
    """A bad params file; the message names the key (e.g. ``audit_model.n``)."""


REFERENCE_SOURCES = ("toyfaces", "folder", "shards")
MAX_INT = 2**53  # an integer setting above this is a typo (and overflows numpy's int64 math)


@dataclass(frozen=True)
class ReferenceConfig:
    """``toyfaces``: render the toy reference into ``path`` (``n``, ``seed``); ``folder``: an
    image folder with an optional ``labels`` file; ``shards``: webdataset shards in ``path``."""

    source: str = "toyfaces"
    path: str = "data/reference"
    labels: str | None = None
    n: int = 20_000
    seed: int = 0

    def validate(self, key: str) -> None:
        _require(
            self.source in REFERENCE_SOURCES, f"{key}.source", f"must be one of {REFERENCE_SOURCES}"
        )
        _require(self.n >= 1, f"{key}.n", "must be >= 1")


@dataclass(frozen=True)
class GenerateConfig:
    """``standalone``: ``n`` samples following the target; ``augment``: the fewest samples that
    make reference + synthetic follow the target. ``budget``: most samples generated.
    ``min_batch``: near the end, batches shrink to about 1.5x the samples still missing (a full
    batch for the last few samples wastes most of it), never below this; set it to
    ``guidance.batch_size`` for fixed-size batches."""

    mode: str = "standalone"
    n: int = 512
    seed: int = 0
    budget: int = 4096
    dataset: str = "fairsynth"
    min_batch: int = 8

    def validate(self, key: str) -> None:
        _require(
            self.mode in ("standalone", "augment"), f"{key}.mode", "must be standalone or augment"
        )
        _require(self.n >= 1, f"{key}.n", "must be >= 1")
        _require(self.budget >= 1, f"{key}.budget", "must be >= 1")
        _require(self.min_batch >= 1, f"{key}.min_batch", "must be >= 1")
        _require(
            bool(self.dataset) and all(ch.isalnum() or ch in "_-" for ch in self.dataset),
            f"{key}.dataset",
            "must be letters, digits, '_' or '-' (it names shards and keys; no dots)",
        )


SCALE_MODES = ("local", "dask")


@dataclass(frozen=True)
class ScaleConfig:
    """Where batches are produced (generated + verified). ``local``: in this process. ``dask``:
    on the workers of an existing Dask cluster (``address``) or of a local cluster started for
    the run (``n_workers`` processes, ``threads_per_worker`` each, ``resources`` per worker,
    e.g. ``{GPU: 1}``; tasks then ask for ``task_resources``). Quotas, judging, the ledger and
    the shards stay in the flow. ``window``: batches planned together from one residual target
    (``fairsynth.run.windows``); the dataset depends on it, not on the engine or the worker count."""

    mode: str = "local"
    window: int = 8
    address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    resources: dict | None = None  # per worker, e.g. {GPU: 1}
    task_resources: dict | None = None  # per batch task; default: {GPU: 1} if resources has GPU
    retries: int = 2  # a batch whose worker died is run again elsewhere this many times

    def validate(self, key: str) -> None:
        _require(self.mode in SCALE_MODES, f"{key}.mode", f"must be one of {list(SCALE_MODES)}")
        _require(self.window >= 1, f"{key}.window", "must be >= 1")
        _require(self.n_workers >= 1, f"{key}.n_workers", "must be >= 1")
        _require(self.threads_per_worker >= 1, f"{key}.threads_per_worker", "must be >= 1")
        _require(self.retries >= 0, f"{key}.retries", "must be >= 0")
        for name in ("resources", "task_resources"):
            value = getattr(self, name)
            _require(
                value is None
                or (isinstance(value, dict) and all(
                    isinstance(k, str) and isinstance(v, int | float) and v > 0
                    for k, v in value.items()
                )),
                f"{key}.{name}",
                "must map resource names to positive numbers, e.g. {GPU: 1}",
            )  # fmt: skip
        if self.address is not None:
            _require(
                "://" in self.address,
                f"{key}.address",
                "must be a scheduler address such as tcp://host:8786",
            )

    def batch_resources(self) -> dict | None:
        if self.task_resources is not None:
            return dict(self.task_resources)
        if self.resources and "GPU" in self.resources:
            return {"GPU": 1}
        return None


@dataclass(frozen=True)
class DownstreamConfig:
    """The fair-classifier experiment (``fairsynth.experiments.downstream``): a classifier of ``label``
    trained on (a) the first ``reference_n`` reference samples, (b) those + the published
    shards, (c) those + as many rejection-sampled unguided samples (same quotas); accuracy per
    group of ``sensitive`` on a balanced test set, over ``seeds``."""

    label: str = "eyeglasses"
    sensitive: str = "skin"
    reference_n: int = 2000
    control_dir: str = "data/downstream/rejection"  # (c): generated once, kept by DVC
    control_budget: int = 40  # most samples generated for (c), per sample wanted
    out: str = "data/downstream"
    test: str = "toyfaces"  # toyfaces (fresh renders) | labelled shards (feed sources)
    test_per_cell: int = 250  # toyfaces test set: samples per (sensitive, label) cell
    test_seed: int = 99
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    arch: str = "convnet"
    steps: int = 300  # gradient steps, the same for every dataset (epochs as many as needed)
    batch_size: int = 64
    lr: float = 0.002
    num_workers: int = 0  # DataLoader workers of the feed

    def check_attributes(self, names: tuple[str, ...], key: str = "downstream") -> None:
        """Run-time check (a preset without this experiment need not name its attributes)."""
        for role in ("label", "sensitive"):
            value = getattr(self, role)
            if value not in names:
                raise ConfigError(f"{key}.{role}: {value!r} is not an attribute {list(names)}")

    def validate(self, key: str) -> None:
        _require(self.label != self.sensitive, f"{key}.sensitive", "must differ from the label")
        _require(len(self.seeds) >= 1, f"{key}.seeds", "needs at least one seed")
        _require(len(set(self.seeds)) == len(self.seeds), f"{key}.seeds", "must be distinct")
        for name in ("reference_n", "control_budget", "test_per_cell", "steps", "batch_size"):
            _require(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        _require(self.lr > 0, f"{key}.lr", "must be > 0")
        _require(self.num_workers >= 0, f"{key}.num_workers", "must be >= 0")
        _require(self.arch in ("convnet", "resnet"), f"{key}.arch", "must be convnet or resnet")


@dataclass(frozen=True)
class OutputConfig:
    dir: str = "data/synthetic"
    shard_size: int = 256

    def validate(self, key: str) -> None:
        _require(self.shard_size >= 1, f"{key}.shard_size", "must be >= 1")


@dataclass(frozen=True)
class AuditModelConfig:
    n: int = 1000
    seed: int = 0
    steps: int = 50
    eta: float = 1.0
    batch_size: int = 64

    def validate(self, key: str) -> None:
        for name in ("n", "steps", "batch_size"):
            _require(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")


MODEL_KINDS = ("unconditional", "text2image")


@dataclass(frozen=True)
class PromptConfig:
    """One text-to-image prompt with its own target and quota total (defaults: the top-level
    ``target`` and ``generate.n``)."""

    prompt: str
    negative_prompt: str | None = None
    n: int | None = None
    target: TargetConfig | None = None

    def validate(self, key: str) -> None:
        _require(bool(self.prompt.strip()), f"{key}.prompt", "must not be empty")
        _require(self.n is None or self.n >= 1, f"{key}.n", "must be >= 1")


@dataclass(frozen=True)
class ModelConfig:
    path: str = "toyfaces"  # "toyfaces" = the shipped DDPM; else a folder or hub id
    kind: str = "unconditional"  # unconditional (DDPMPipeline layout) | text2image (SD)
    steps: int = 50
    eta: float = 1.0
    layer: str = "mid_block"
    local_files_only: bool = True
    cfg_scale: float = 7.5  # text2image: classifier-free guidance scale
    prompts: list[PromptConfig] | None = None  # text2image: what to generate

    def validate(self, key: str) -> None:
        _require(self.kind in MODEL_KINDS, f"{key}.kind", f"must be one of {MODEL_KINDS}")
        _require(self.steps >= 1, f"{key}.steps", "must be >= 1")
        _require(0.0 <= self.eta <= 1.0, f"{key}.eta", "must be in [0, 1]")
        _require(self.cfg_scale >= 0, f"{key}.cfg_scale", "must be >= 0")
        if self.kind == "text2image":
            _require(bool(self.prompts), f"{key}.prompts", "text2image needs at least one prompt")
        else:
            _require(not self.prompts, f"{key}.prompts", "only for kind: text2image")


@dataclass(frozen=True)
class TargetConfig:
    """Either ``marginals`` (independent per attribute) or ``cells`` over ``attributes``."""

    marginals: dict | None = None
    attributes: list | None = None
    cells: dict | None = None

    def validate(self, key: str) -> None:
        _require(
            (self.marginals is None) != (self.cells is None),
            key,
            "give exactly one of 'marginals' or 'cells' (with 'attributes')",
        )
        if self.cells is not None:
            _require(bool(self.attributes), f"{key}.attributes", "required with 'cells'")


@dataclass(frozen=True)
class AdpConfig:
    path: str = "toyfaces"  # "toyfaces" = the shipped ADP; else a folder
    pseudo_labeller: str = "toyfaces"  # labels ADP training images: toyfaces|folder|deepface
    neutral_prompts: list[str] | None = None  # text2image: extra prompts for ADP trajectories
    trajectories: int = 2048
    record_every: int = 2
    epochs: int = 30
    lr: float = 3e-4
    dropout: float = 0.2
    weight_decay: float = 1e-2
    seed: int = 0

    def validate(self, key: str) -> None:
        _require(self.trajectories >= 8, f"{key}.trajectories", "must be >= 8")
        _require(self.record_every >= 1, f"{key}.record_every", "must be >= 1")
        _require(self.lr > 0, f"{key}.lr", "must be > 0")
        _require(0.0 <= self.dropout < 1.0, f"{key}.dropout", "must be in [0, 1)")
        _require(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")


@dataclass(frozen=True)
class GuidanceParams:
    mode: str = "distribution"
    loss: str = "chi2"
    strength: float = 1.0
    window: list = field(default_factory=lambda: [0.0, 1.0])
    temperature: float = 1.0
    max_step: float = 0.5
    batch_size: int = 64
    residual: bool = False  # without quotas (evaluate): guide each batch toward what is lacking

    def validate(self, key: str) -> None:
        from fairsynth.guidance.guide import GuidanceConfig

        _require(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _require(
            len(self.window) == 2 and all(isinstance(w, int | float) for w in self.window),
            f"{key}.window",
            "must be [start, end]",
        )
        try:
            self.to_config()
        except ValueError as exc:
            raise ConfigError(str(exc).replace("guidance.", f"{key}.")) from exc
        del GuidanceConfig

    def to_config(self):
        from fairsynth.guidance.guide import GuidanceConfig

        return GuidanceConfig(
            mode=self.mode,
            loss=self.loss,
            strength=float(self.strength),
            window=(float(self.window[0]), float(self.window[1])),
            temperature=float(self.temperature),
            max_step=float(self.max_step),
            residual=self.residual,
        )


@dataclass(frozen=True)
class DeepfaceConfig:
    """deepface as the verifier (see ``fairsynth.verify.deepface`` for the class mapping)."""

    detector: str = "skip"  # skip (aligned crops) | opencv | any deepface backend
    home: str | None = None  # DEEPFACE_HOME (weights in <home>/.deepface/weights); default env/~
    allow_download: bool = False  # never download weights at run time unless this is true
    batch_size: int = 32
    retries: int = 2  # a crashed worker is restarted and the batch retried this many times
    attributes: dict | None = None  # {attribute: {source, classes}}; default gender + race

    def validate(self, key: str) -> None:
        from fairsynth.verify.deepface import attribute_maps

        _require(self.batch_size >= 1, f"{key}.batch_size", "must be >= 1")
        _require(self.retries >= 0, f"{key}.retries", "must be >= 0")
        try:
            attribute_maps(self.attributes, f"{key}.attributes")
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc


@dataclass(frozen=True)
class VerifyConfig:
    verifier: str = "toyfaces"  # toyfaces (shipped) | a classifier folder | deepface
    second: str | None = None  # an independent second verifier: samples must satisfy both
    confidence: float = 0.9
    audit_n: int = 256  # labelled reference samples each verifier is audited on (0: none)
    deepface: DeepfaceConfig = field(default_factory=DeepfaceConfig)

    def validate(self, key: str) -> None:
        _require(0.0 <= self.confidence <= 1.0, f"{key}.confidence", "must be in [0, 1]")
        _require(self.audit_n >= 0, f"{key}.audit_n", "must be >= 0")


@dataclass(frozen=True)
class Params:
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    audit_model: AuditModelConfig = field(default_factory=AuditModelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attributes: dict | None = None  # {name: [classes]}; default: the toy world's
    target: TargetConfig | None = None
    adp: AdpConfig = field(default_factory=AdpConfig)
    guidance: GuidanceParams = field(default_factory=GuidanceParams)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    downstream: DownstreamConfig = field(default_factory=DownstreamConfig)
    seed: int = 0

    def attribute_space(self):
        from fairsynth.core.attributes import AttributeSpace
        from fairsynth.toyfaces.render import ATTRIBUTES

        return AttributeSpace.from_dict(self.attributes or ATTRIBUTES)

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

    def validate(self, key: str) -> None:
        if self.attributes is not None:
            try:
                self.attribute_space()
            except ValueError as exc:
                raise ConfigError(f"attributes: {exc}") from exc
        if self.target is not None:
            self.build_target()
            self.jobs()
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
        if "deepface" in (self.verify.verifier, self.verify.second):
            from fairsynth.verify.deepface import attribute_maps

            maps = attribute_maps(self.verify.deepface.attributes)
            first = self.verify.verifier == "deepface"
            for name, classes in self.attribute_space().attributes:
                if name not in maps and not first:
                    continue  # a second verifier judges the attributes it can
                if name not in maps:
                    raise ConfigError(
                        f"verify.deepface.attributes: no mapping for attribute {name!r} "
                        f"(mapped: {sorted(maps)})"
                    )
                if tuple(maps[name].classes) != tuple(classes):
                    raise ConfigError(
                        f"verify.deepface.attributes.{name}.classes: {list(maps[name].classes)} "
                        f"must be the attribute's classes {list(classes)}, in that order"
                    )

    def _check_no_overlap(self) -> None:
        """No folder a run writes may be, hold or sit inside a folder it reads (compared as
        resolved paths, so symlinks and ``..`` do not hide it): it would overwrite its inputs."""
        from fairsynth.toyfaces import resolve

        inputs = {
            "reference.path": self.reference.path,
            "reference.labels": self.reference.labels,
            "model.path": resolve("model", self.model.path),
            "adp.path": resolve("adp", self.adp.path),
            "adp.pseudo_labeller": resolve("pseudo_labeller", self.adp.pseudo_labeller),
            "verify.verifier": resolve("verifier", self.verify.verifier),
            "verify.second": resolve("verifier", self.verify.second)
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
                if value is None or str(value) == "deepface":
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
    return _build(Params, raw, "")


def _build(cls: type, raw: object, key: str):
    where = key or "params"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        full = ", ".join(f"{key + '.' if key else ''}{u}" for u in unknown)
        raise ConfigError(
            f"unknown key(s): {full} (allowed in {where}: {', '.join(sorted(names))})"
        )
    values = {}
    for name, value in raw.items():
        sub = f"{key}.{name}" if key else name
        values[name] = _coerce(hints[name], value, sub)
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def _coerce(tp, value, key: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        return _coerce(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {_short(value)}")
        (arg,) = typing.get_args(tp) or (object,)
        return [_coerce(arg, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {_short(value)}")
        if abs(value) > MAX_INT:
            raise ConfigError(f"{key}: {_short(value)} is out of range (|n| <= {MAX_INT:,})")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_short(value)}")
        if abs(value) > 1e300 or not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {_short(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {_short(value)}")
        return value
    _check_finite(value, key)
    return value


def _check_finite(value: object, key: str) -> None:
    """Numbers anywhere in a free-form value (targets, cells) must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value}")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")
