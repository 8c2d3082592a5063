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

import dataclasses
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

from fairsynth.app.config import Params, ScaleConfig
from fairsynth.diffusion.backends import bind_prompt, load_model
from fairsynth.guidance.adp import TrainedADP
from fairsynth.run.ledger import fingerprint
from fairsynth.run.produce import BatchOutput, BatchProducer
from fairsynth.run.windows import BatchSpec
from fairsynth.toyfaces import resolve
from fairsynth.verify import load_verifier


class Executor(Protocol):
    def map(self, specs: list[BatchSpec]) -> Iterator[BatchOutput]: ...

    def close(self) -> None: ...


def build_producer(params: Params, worker: str = "local") -> BatchProducer:
    """Load everything one process needs to produce batches of this run."""
    base = load_model(params.model)
    models = [bind_prompt(base, prompt, params.model.cfg_scale) for prompt, _, _ in params.jobs()]
    config = params.guidance.to_config()
    adp = None
    if config.mode != "none":
        adp = TrainedADP.load(resolve("adp", params.adp.path)).aligned(params.attribute_space())
    verifier = load_verifier(params.verify, params.attribute_space())
    return BatchProducer(
        models, adp, verifier, params.build_target().space, config, params.model.steps,
        params.model.eta, params.model.layer, worker,
    )  # fmt: skip


class LocalExecutor:
    """Batches one after the other in this process."""

    def __init__(self, producer: BatchProducer):
        self.producer = producer

    def map(self, specs: list[BatchSpec]) -> Iterator[BatchOutput]:
        for spec in specs:
            yield self.producer.produce(spec)

    def close(self) -> None:
        self.producer.close()


_PRODUCERS: dict[str, BatchProducer] = {}
_LOCK = threading.Lock()


def weights_signature(params: Params) -> list:
    """The model, ADP and verifier files of a run, by content."""
    from fairsynth.core.filehash import files_signature, local_model_path

    paths = [local_model_path(resolve("model", params.model.path)), resolve("adp", params.adp.path)]
    for name in (params.verify.verifier, params.verify.second):
        if name not in (None, "deepface"):
            paths.append(resolve("verifier", name))
    return [files_signature(p) for p in paths]


def produce_on_worker(params: Params, spec: BatchSpec) -> BatchOutput:
    """The task a worker runs: its producer for these params is loaded on first use and kept
    (one per worker process: the latest run's), then the spec is produced."""
    # the weights by content too: a long-lived worker must not keep weights retrained in place
    key = fingerprint([dataclasses.asdict(params), weights_signature(params)])
    with _LOCK:  # one load per process even with several threads per worker
        producer = _PRODUCERS.get(key)
        if producer is None:
            import torch

            for stale in _PRODUCERS.values():  # a long-lived worker keeps the latest run only
                stale.close()
            _PRODUCERS.clear()
            torch.set_num_threads(params.scale.threads_per_worker)
            producer = build_producer(params, worker=_worker_name())
            _PRODUCERS[key] = producer
    return producer.produce(spec)


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return "local"


def task_key(params: Params, spec: BatchSpec) -> str:
    return f"fairsynth-batch-{fingerprint(dataclasses.asdict(params))[:10]}-{spec.batch}"


class DaskExecutor:
    """Batches on Dask workers: an existing cluster (``scale.address``) or a local one."""

    def __init__(self, params: Params, client=None):
        from distributed import Client, LocalCluster

        self.params, self.scale = params, params.scale
        self._cluster = None
        self._own_client = client is None
        if client is None:
            if self.scale.address:
                client = Client(self.scale.address)
            else:
                self._cluster = LocalCluster(**local_cluster_kwargs(self.scale))
                client = Client(self._cluster)
        self.client = client

    def map(self, specs: list[BatchSpec]) -> Iterator[BatchOutput]:
        futures = [
            self.client.submit(
                produce_on_worker,
                self.params,
                spec,
                key=task_key(self.params, spec),
                resources=self.scale.batch_resources(),
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


def local_cluster_kwargs(scale: ScaleConfig) -> dict:
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


def make_executor(params: Params, producer: BatchProducer | None = None) -> Executor:
    if params.scale.mode == "dask":
        return DaskExecutor(params)
    return LocalExecutor(producer or build_producer(params))


def ordered(outputs: Iterable[BatchOutput], specs: list[BatchSpec]) -> Iterator[BatchOutput]:
    """Check that outputs come back for exactly ``specs``, in order."""
    for spec, out in zip(specs, outputs, strict=True):
        if out.spec != spec:
            raise RuntimeError(f"executor returned batch {out.spec.batch} for {spec.batch}")
        yield out
