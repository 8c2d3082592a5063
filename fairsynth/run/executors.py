"""Where batches are produced: in this process, or on the workers of a Dask cluster.

An executor turns a window's ``BatchSpec``s into ``BatchOutput``s (images + verdict) and yields
them *in batch order*, whatever order the workers finish in; the caller judges them against
the quotas. Dask reschedules the task of a worker that dies on another worker (``retries``
more attempts for other failures), and a batch's output depends on its spec only, so a rerun
gives the same images and nothing is counted twice: only the flow counts, once per spec.

The Prefect flows use ``tasks.scale.PrefectDaskExecutor`` (prefect-dask's ``DaskTaskRunner``)
with the same ``produce_on_worker``; ``dvc repro`` uses ``DaskExecutor`` (dask.distributed).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from fairsynth.diffusion.backends import bind_prompt, load_model
from fairsynth.guidance.adp import TrainedADP
from fairsynth.run.produce import BatchProducer
from fairsynth.run.spec import ProducerRecipe, ScaleSpec
from fairsynth.run.windows import BatchOutput, BatchSpec
from fairsynth.verify import load_verifier


def build_producer(recipe: ProducerRecipe, worker: str = "local") -> BatchProducer:
    """Load everything one process needs to produce batches of this run."""
    base = load_model(recipe.model)
    backends = [bind_prompt(base, prompt, recipe.model.cfg_scale) for prompt in recipe.prompts]
    adp = None
    if recipe.guidance.mode != "none":
        adp = TrainedADP.load(recipe.adp).aligned(recipe.attributes)
    verifier = load_verifier(recipe.verifier, recipe.attributes)
    return BatchProducer(backends, adp, verifier, recipe.space, recipe.guidance, recipe.sampler,
                         worker)  # fmt: skip


class LocalExecutor:
    """Batches one after the other in this process (its producer loaded once per recipe), on
    all of this process's threads: ``threads_per_worker`` is for workers."""

    def map(self, recipe: ProducerRecipe, specs: list[BatchSpec]) -> Iterator[BatchOutput]:
        for spec in specs:
            yield _producer(recipe, threads=None).produce(spec)

    def close(self) -> None:
        release_producers()


_PRODUCERS: dict[str, BatchProducer] = {}
_LOCK = threading.Lock()


def produce_on_worker(recipe: ProducerRecipe, spec: BatchSpec) -> BatchOutput:
    """The task a worker runs: its producer for this recipe is loaded on first use and kept
    (one per process: the latest run's), then the spec is produced. The recipe's key covers
    the weight files by content: a long-lived worker never keeps weights retrained in place."""
    return _producer(recipe, threads=recipe.threads).produce(spec)


def _producer(recipe: ProducerRecipe, threads: int | None) -> BatchProducer:
    with _LOCK:  # one load per process even with several threads per worker
        producer = _PRODUCERS.get(recipe.key)
        if producer is None:
            import torch

            release_producers()  # a long-lived worker keeps the latest run only
            if threads is not None:
                torch.set_num_threads(threads)
            producer = build_producer(recipe, worker=_worker_name())
            _PRODUCERS[recipe.key] = producer
    return producer


def release_producers() -> None:
    for stale in _PRODUCERS.values():
        stale.close()
    _PRODUCERS.clear()


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


def task_key(recipe: ProducerRecipe, spec: BatchSpec) -> str:
    return f"fairsynth-batch-{recipe.key[:10]}-{spec.batch}"


class DaskExecutor:
    """Batches on Dask workers: an existing cluster (``scale.address``) or a local one."""

    def __init__(self, scale: ScaleSpec, client=None):
        from distributed import Client, LocalCluster

        self.scale = scale
        self._cluster = None
        self._own_client = client is None
        if client is None:
            if scale.address:
                client = Client(scale.address)
            else:
                self._cluster = LocalCluster(**local_cluster_kwargs(scale))
                client = Client(self._cluster)
        self.client = client

    def map(self, recipe: ProducerRecipe, specs: list[BatchSpec]) -> Iterator[BatchOutput]:
        futures = [
            self.client.submit(
                produce_on_worker,
                recipe,
                spec,
                key=task_key(recipe, spec),
                resources=self.scale.batch_resources,
                retries=self.scale.retries,
                pure=False,
            )  # fmt: skip
            for spec in specs
        ]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.release()

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def local_cluster_kwargs(scale: ScaleSpec) -> dict:
    """``distributed.LocalCluster`` arguments for ``scale`` (worker processes, not threads:
    torch and the verifiers hold the GIL-free work, but each worker keeps its own models)."""
    kwargs = {
        "n_workers": scale.n_workers,
        "threads_per_worker": scale.threads_per_worker,
        "processes": True,
        "dashboard_address": None,
    }
    if scale.resources:
        kwargs["resources"] = dict(scale.resources)
    return kwargs


def make_executor(scale: ScaleSpec) -> LocalExecutor | DaskExecutor:
    if scale.mode == "dask":
        return DaskExecutor(scale)
    return LocalExecutor()
