"""The sections of ``params.yaml``: types, defaults, ranges and each section's own rules."""

from __future__ import annotations

import typing
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fairsynth.app.config.base import (
    AtLeast0,
    AtLeast1,
    ConfigError,
    FreeDict,
    Int,
    Invalid,
    Number,
    Positive,
    Section,
    Unit,
    is_number,
    worded,
)

Source = Literal["toyfaces", "folder", "shards"]
ScaleMode = Literal["local", "dask"]
GenerateMode = Literal["standalone", "augment"]
Arch = Literal["strided", "convnet", "resnet"]
REFERENCE_SOURCES = typing.get_args(Source)
SCALE_MODES = typing.get_args(ScaleMode)


class ReferenceConfig(Section):
    """``toyfaces``: render the toy reference into ``path`` (``n``, ``seed``); ``folder``: an
    image folder (nested folders too) with a ``labels`` file, or its own ``metadata.csv`` /
    ``metadata.jsonl`` (Hugging Face ImageFolder); ``shards``: webdataset shards in ``path``.
    Your labels as they are: ``columns`` maps an attribute to the column holding it,
    ``classes`` maps your values to the attribute's classes (``{skin: {Fitzpatrick V: dark}}``),
    and classes match ignoring case unless ``ignore_case: false``."""

    source: Annotated[Source, worded(f"must be one of {REFERENCE_SOURCES}")] = "toyfaces"
    path: str = "data/reference"
    labels: str | None = None
    n: AtLeast1 = 20_000
    seed: Int = 0
    columns: FreeDict | None = None
    classes: FreeDict | None = None
    ignore_case: bool = True

    @field_validator("columns")
    @classmethod
    def _columns(cls, columns: dict | None) -> dict | None:
        if columns is not None and not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in columns.items()
        ):
            raise Invalid("must map attribute names to column names, e.g. {skin: skin_tone}")
        return columns

    @field_validator("classes")
    @classmethod
    def _classes(cls, classes: dict | None) -> dict | None:
        if classes is not None and not all(
            isinstance(table, dict) and all(isinstance(v, str) for v in table.values())
            for table in classes.values()
        ):
            raise Invalid("must map each attribute to {your value: class}, e.g. {skin: {V: dark}}")
        return classes


class GenerateConfig(Section):
    """``standalone``: ``n`` samples following the target; ``augment``: the fewest samples that
    make reference + synthetic follow the target. ``budget``: most samples generated.
    ``min_batch``: near the end, batches shrink to about 1.5x the samples still missing (a full
    batch for the last few samples wastes most of it), never below this; set it to
    ``guidance.batch_size`` for fixed-size batches. ``accept_partial``: a run that ends short
    of its quotas (the budget spent) publishes what it has and succeeds, the card saying the
    set is partial; otherwise it fails (non-zero exit), and a budget below the quotas' total is
    refused before anything is generated."""

    mode: Annotated[GenerateMode, worded("must be standalone or augment")] = "standalone"
    n: AtLeast1 = 512
    seed: Int = 0
    budget: AtLeast1 = 4096
    dataset: str = "fairsynth"
    min_batch: AtLeast1 = 8
    accept_partial: bool = False

    @field_validator("dataset")
    @classmethod
    def _name(cls, name: str) -> str:
        if not name or not all(ch.isalnum() or ch in "_-" for ch in name):
            raise Invalid("must be letters, digits, '_' or '-' (it names shards and keys; no dots)")
        return name


class ScaleConfig(Section):
    """Where batches are produced (generated + verified). ``local``: in this process. ``dask``:
    on the workers of an existing Dask cluster (``address``) or of a local cluster started for
    the run (``n_workers`` processes, ``threads_per_worker`` each, ``resources`` per worker,
    e.g. ``{GPU: 1}``; tasks then ask for ``task_resources``). Quotas, judging, the ledger and
    the shards stay in the flow. ``window``: batches planned together from one residual target
    (``fairsynth.run.windows``); the dataset depends on it, not on the engine or the worker count."""

    mode: Annotated[ScaleMode, worded(f"must be one of {list(SCALE_MODES)}")] = "local"
    window: AtLeast1 = 8
    address: str | None = None
    n_workers: AtLeast1 = 2
    threads_per_worker: AtLeast1 = 1
    resources: FreeDict | None = None  # per worker, e.g. {GPU: 1}
    task_resources: FreeDict | None = None  # per batch task; default: {GPU: 1} if resources has GPU
    retries: AtLeast0 = 2  # a batch whose worker died is run again elsewhere this many times
    # local: generate batch b+1 on a thread while batch b is verified and written to the ledger;
    # auto: when the model runs on CUDA (on a CPU both would share the same cores)
    overlap: Annotated[bool | Literal["auto"], worded("must be true, false or auto")] = "auto"

    @field_validator("resources", "task_resources")
    @classmethod
    def _amounts(cls, value: dict | None) -> dict | None:
        if value is not None and not all(
            isinstance(k, str) and is_number(v) and v > 0 for k, v in value.items()
        ):
            raise Invalid("must map resource names to positive numbers, e.g. {GPU: 1}")
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, address: str | None) -> str | None:
        if address is not None and "://" not in address:
            raise Invalid("must be a scheduler address such as tcp://host:8786")
        return address

    def batch_resources(self) -> dict | None:
        if self.task_resources is not None:
            return dict(self.task_resources)
        if self.resources and "GPU" in self.resources:
            return {"GPU": 1}
        return None


class HardSetting(Section):
    """The downstream experiment's harder setting: fewer reference samples, and a fraction of
    their labels flipped (annotation noise, drawn once with ``noise_seed``), so that the
    reference alone is not at its ceiling."""

    reference_n: AtLeast1 = 100
    label_noise: Annotated[Number, Field(ge=0, lt=1), worded("must be in [0, 1)")] = 0.2
    noise_seed: Int = 0


class DownstreamConfig(Section):
    """The fair-classifier experiment (``fairsynth.experiments.downstream``): a classifier of ``label``
    trained on (a) the first ``reference_n`` reference samples, (b) those + the published
    shards, (c) those + rejection-sampled unguided samples (same quotas, at most
    ``control_budget`` x the published run's generated samples); accuracy per
    group of ``sensitive`` on a balanced test set, over ``seeds``."""

    label: str = "eyeglasses"
    sensitive: str = "skin"
    reference_n: AtLeast1 = 2000
    control_dir: str = "data/downstream/rejection"  # (c): generated once, kept by DVC
    # (c) generates at most this many times what the published run generated (1: equal cost)
    control_budget: Positive = 1.0
    out: str = "data/downstream"
    test: str = "toyfaces"  # toyfaces (fresh renders) | labelled shards (feed sources)
    test_per_cell: AtLeast1 = 250  # toyfaces test set: samples per (sensitive, label) cell
    test_seed: Int = 99
    seeds: list[Int] = Field(default_factory=lambda: list(range(20)))
    # strided: a small strided conv net, ~20x cheaper a step than convnet (so 20+ seeds of six
    # settings in two scenarios fit a CPU); convnet/resnet: the classifiers' own architectures
    arch: Annotated[Arch, worded("must be strided, convnet or resnet")] = "strided"
    steps: AtLeast1 = 300  # gradient steps, the same for every dataset (epochs as many as needed)
    batch_size: AtLeast1 = 64
    lr: Positive = 0.002
    num_workers: AtLeast0 = 0  # DataLoader workers of the feed
    workers: AtLeast1 = 2  # processes training the runs (one torch thread each)
    # the settings to run (default: all six); without reference+rejection no control is made
    settings: list[str] | None = None
    hard: HardSetting | None = Field(default_factory=HardSetting)  # null: the main setting only

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise Invalid("needs at least one seed")
        if len(set(seeds)) != len(seeds):
            raise Invalid("must be distinct")
        return seeds

    @field_validator("settings")
    @classmethod
    def _settings(cls, settings: list[str] | None) -> list[str] | None:
        known = ("reference", "reference+fairsynth", "reference+rejection", "reference-resampled",
                 "reference-reweighted", "reference+fairsynth-resampled")  # fmt: skip
        if settings is not None:
            if not settings or len(set(settings)) != len(settings):
                raise Invalid("must name at least one setting, each once")
            for name in settings:
                if name not in known:
                    raise Invalid(f"unknown setting {name!r}; expected some of {list(known)}")
        return settings

    @model_validator(mode="after")
    def _roles(self) -> DownstreamConfig:
        if self.label == self.sensitive:
            raise Invalid("must differ from the label", "sensitive")
        return self

    def check_attributes(self, names: tuple[str, ...], key: str = "downstream") -> None:
        """Run-time check (a preset without this experiment need not name its attributes)."""
        for role in ("label", "sensitive"):
            value = getattr(self, role)
            if value not in names:
                raise ConfigError(f"{key}.{role}: {value!r} is not an attribute {list(names)}")


class OutputConfig(Section):
    """Where a run writes: the published set (``dir``), the reference audit (``audit_dir``)
    and the report (``report_dir``); nothing else is written but the ledger beside ``dir``."""

    dir: str = "data/synthetic"
    shard_size: AtLeast1 = 256
    audit_dir: str = "data/audit"
    report_dir: str = "data/report"


class CardConfig(Section):
    """What the published dataset card and Croissant file say that a run cannot know."""

    name: str = "fairsynth-dataset"
    license: str = "cc-by-4.0"  # a Hugging Face licence identifier
    use_cases: str = (
        "Training and evaluating attribute classifiers whose accuracy must hold across the "
        "balanced groups; studying debiasing. Not for identifying people."
    )

    @field_validator("name", "license")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value.strip():
            raise Invalid("must not be empty")
        return value


class AuditModelConfig(Section):
    n: AtLeast1 = 1000
    seed: Int = 0
    steps: AtLeast1 = 50
    eta: Number = 1.0
    batch_size: AtLeast1 = 64


class AdpConfig(Section):
    path: str = "toyfaces"  # "toyfaces" = the shipped ADP; else a folder
    pseudo_labeller: str = "toyfaces"  # labels ADP training images: toyfaces|folder|deepface
    neutral_prompts: list[str] | None = None  # text2image: extra prompts for ADP trajectories
    trajectories: Annotated[Int, Field(ge=8)] = 2048
    record_every: AtLeast1 = 2
    epochs: Int = 30
    lr: Positive = 3e-4
    dropout: Annotated[Number, Field(ge=0, lt=1), worded("must be in [0, 1)")] = 0.2
    weight_decay: Annotated[Number, Field(ge=0)] = 1e-2
    seed: Int = 0
    # the most of the recorded images the pseudo-labeller may reject (they are never trained
    # on); above it, train-adp stops naming the reasons
    max_rejected: Unit = 0.05
