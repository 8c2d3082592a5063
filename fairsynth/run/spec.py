"""A generation run, resolved once: what the run layer gets instead of the params.

``fairsynth.app.runspec.resolve_run`` builds a ``RunSpec`` from the params (names resolved to
folders, targets built, quotas planned, the fingerprint computed) before anything is loaded;
below the app layer nothing reads the params again. ``ProducerRecipe`` is the part a worker
needs to build its producer (model, prompts, ADP, verifiers, guidance and sampler settings),
small and picklable, sent with every batch task and keyed by content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.diffusion.sampling import SamplerSettings
from fairsynth.diffusion.spec import ModelSpec, PromptSpec
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.verify import VerifierSpec


@dataclass(frozen=True)
class ProducerRecipe:
    model: ModelSpec
    prompts: tuple[PromptSpec | None, ...]  # per job; (None,) for an unconditional model
    adp: str | Path | None  # the ADP folder; None when guidance is off
    verifier: VerifierSpec
    attributes: AttributeSpace  # every attribute: the ADP's and verifiers' classes line up here
    space: AttributeSpace  # the guided attributes: the targets' cells
    guidance: GuidanceConfig
    sampler: SamplerSettings
    threads: int = 1  # torch threads of a worker process
    key: str = ""  # content fingerprint (settings and weight files): a worker's cache key


@dataclass(frozen=True)
class ScaleSpec:
    mode: str = "local"  # local | dask
    address: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    resources: dict | None = None
    batch_resources: dict | None = None  # what each batch task asks of a worker
    retries: int = 2
    overlap: bool = False  # local: generate the next batch while this one is verified
    gpus: int = 0  # dask, local cluster: CUDA devices here (one worker each); 0 on a CPU


@dataclass(frozen=True)
class Job:
    """One generation job: an unconditional model has one, text-to-image one per prompt."""

    prompt: PromptSpec | None
    target: Target
    quotas: np.ndarray
    # P(verified cell | true cell) when the quotas count verified cells for a true target
    # (verify.correct_quotas): guidance then aims at the truth behind what is still missing
    confusion: np.ndarray | None = None


@dataclass(frozen=True)
class TopUp:
    """What a top-up run keeps: the published version it adds to (its ``index.json``), whose
    shards stay as they are; new batches and shards are numbered after the parent's."""

    parent: dict  # the parent version's index
    parent_manifest: Path  # that version's manifest (rows of every sample it judged)
    changes: dict  # what changed since the parent (reference counts, added, surplus, policy)

    @property
    def first_batch(self) -> int:
        return int(self.parent["batches"])

    @property
    def first_shard(self) -> int:
        return len(self.parent["shards"])


@dataclass(frozen=True)
class RunSpec:
    space: AttributeSpace
    jobs: tuple[Job, ...]
    recipe: ProducerRecipe
    scale: ScaleSpec
    output_dir: Path
    dataset: str
    seed: int
    budget: int
    batch_size: int
    min_batch: int
    window: int
    shard_size: int
    model_name: str  # as the params name it (recorded per sample)
    guidance_hash: str
    fingerprint: dict = field(default_factory=dict)  # what decides the samples (not the budget)
    fingerprint_id: str = ""
    # the fingerprint less the quotas: a run that differs from a publication only in what the
    # reference asks for (augment) may top that publication up instead of starting over
    recipe_id: str = ""
    reference_id: str | None = None  # the reference's content (augment mode), from the audit
    reference_counts: tuple[int, ...] | None = None  # its per-cell counts (augment mode)
    topup: TopUp | None = None  # set when this run adds to a published version

    @property
    def first_batch(self) -> int:
        return self.topup.first_batch if self.topup else 0

    @property
    def confidence(self) -> float:
        return self.recipe.verifier.confidence

    @property
    def text2image(self) -> bool:
        return self.recipe.model.kind == "text2image"
