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
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fairsynth.diffusion.backends import bind_prompt, load_model
from fairsynth.diffusion.device import resolve_device
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.guided import GuidedSampler
from fairsynth.run.produce import BatchProducer
from fairsynth.run.spec import ProducerRecipe, ScaleSpec
from fairsynth.run.windows import BatchOutput, BatchSpec
from fairsynth.verify import load_verifier


def build_producer(recipe: ProducerRecipe, worker: str = "local") -> BatchProducer:
    """Load everything one process needs to produce batches of this run."""
    device = worker_device(resolve_device(recipe.model.device))
    if device != recipe.model.device:
        recipe = dataclasses.replace(recipe, model=dataclasses.replace(recipe.model, device=device))
    base = load_model(recipe.model)
    backends = [bind_prompt(base, prompt, recipe.model.cfg_scale) for prompt in recipe.prompts]
    adp = None
    if recipe.guidance.mode != "none":
        adp = TrainedADP.load(recipe.adp, recipe.model.device).aligned(recipe.attributes)
        adp.check_layer(recipe.sampler.layer)
    verifier = load_verifier(recipe.verifier, recipe.attributes, recipe.model.device)
    samplers = [GuidedSampler(b, recipe.sampler, recipe.guidance, adp) for b in backends]
    return BatchProducer(samplers, verifier, recipe.space, worker, recipe.model.device)


class LocalExecutor:
    """Batches one after the other in this process (its producer loaded once per recipe), on
    all of this process's threads: ``threads_per_worker`` is for workers.

    With ``overlap``, a thread generates batch b+1 while this one verifies batch b and the flow
    judges it and writes it to the ledger (for an accelerator, whose queue then never idles on
    the verifier or the ledger). The outputs and their order are the same either way."""

    def __init__(self, overlap: bool = False):
        self.overlap = overlap

    def map(self, recipe: ProducerRecipe, specs: list[BatchSpec]) -> Iterator[BatchOutput]:
        producer = _producer(recipe, threads=None)
        if not self.overlap:
            for spec in specs:
                yield producer.produce(spec)
            return
        yield from _overlapped(producer, specs)

    def close(self) -> None:
        release_producers()


def _overlapped(producer: BatchProducer, specs: list[BatchSpec]) -> Iterator[BatchOutput]:
    """Generation on a thread, one batch ahead; verification here, in batch order."""
    import queue

    import torch

    ready: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    threads = torch.get_num_threads()

    def generate() -> None:
        torch.set_num_threads(threads)  # a new thread starts with the default count
        try:
            for spec in specs:
                if stop.is_set():
                    return
                ready.put((spec, *producer.generate(spec), None))
        except BaseException as exc:  # handed to the consumer, raised there
            ready.put((None, None, 0.0, exc))

    worker = threading.Thread(target=generate, name="fairsynth-generate", daemon=True)
    worker.start()
    try:
        for _ in specs:
            t0 = time.perf_counter()
            spec, images, seconds, error = ready.get()
            waited = time.perf_counter() - t0
            if error is not None:
                raise error
            output = producer.verify(spec, images, seconds)
            output.timing["wait"] = waited
            yield output
    finally:
        stop.set()
        while worker.is_alive():  # unblock a put, then let the thread see the stop
            try:
                ready.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()


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
        from distributed import Client

        self.scale = scale
        self._cluster = None
        self._own_client = client is None
        if client is None:
            if scale.address:
                client = Client(scale.address)
            else:
                self._cluster = make_local_cluster(**local_cluster_kwargs(scale))
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
                t0 = time.perf_counter()
                output = future.result()
                output.timing["wait"] = time.perf_counter() - t0
                yield output
        finally:
            for future in futures:
                future.release()

    def close(self) -> None:
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def local_cluster_kwargs(scale: ScaleSpec) -> dict:
    """``make_local_cluster`` arguments for ``scale`` (worker processes, not threads: torch and
    the verifiers hold the GIL-free work, but each worker keeps its own models)."""
    kwargs = {
        "n_workers": scale.n_workers,
        "threads_per_worker": scale.threads_per_worker,
        "processes": True,
        "dashboard_address": None,
        "gpus": scale.gpus,
    }
    if scale.resources:
        kwargs["resources"] = dict(scale.resources)
    return kwargs


PIN_BY_NAME = "FAIRSYNTH_GPU_BY_WORKER_NAME"  # set on workers of a plain cluster on GPUs


def make_local_cluster(gpus: int = 0, **kwargs):
    """A local cluster for a run: with ``gpus``, one worker per GPU (``dask_cuda``'s
    LocalCUDACluster when installed, else a LocalCluster whose worker ``k`` uses ``cuda:k``),
    else ``distributed.LocalCluster(**kwargs)``. Either way the workers start without Dask's
    ``MALLOC_TRIM_THRESHOLD_`` (set explicitly, it turns off glibc's dynamic mmap threshold, so
    every large tensor is a fresh mmap: a 1-thread worker ran a toy batch in 15.8 s instead of
    8.1 s) and with ``OMP_NUM_THREADS`` (MKL, OpenBLAS) = its threads, not 1."""
    from distributed import LocalCluster

    with _spawn_environ(str(kwargs.get("threads_per_worker", 1))):
        if not gpus:
            return LocalCluster(**kwargs)
        kwargs = {
            **kwargs,
            "n_workers": gpus,
            "resources": {**kwargs.get("resources", {}), "GPU": 1},
        }
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            return LocalCluster(**kwargs, env={PIN_BY_NAME: "1"})
        kwargs.pop("processes", None)
        return LocalCUDACluster(**kwargs)


@contextmanager
def _spawn_environ(threads: str):
    """The environment workers are spawned with. Dask's nanny takes a variable from this
    process's environment before its own config, and writes its config into this process's
    environment when it spawns (so one default cluster leaves OMP_NUM_THREADS=1 and
    MALLOC_TRIM_THRESHOLD_ here for the next): set what we mean for the spawn, then restore."""
    import os

    import dask

    threads_env = dict.fromkeys(
        ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), threads
    )
    saved = dict(os.environ)
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    os.environ.update(threads_env)
    config = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    config.update({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in threads_env.items()})
    try:
        with dask.config.set(config):
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def worker_device(device: str) -> str:
    """The device this process's models go to: on a plain cluster on GPUs, worker ``k``'s own
    ``cuda:k`` (dask_cuda's workers see their own GPU first: ``cuda`` is already theirs)."""
    import os

    name = _worker_name()
    if device == "cuda" and os.environ.get(PIN_BY_NAME) == "1" and name.isdigit():
        import torch

        return f"cuda:{int(name) % max(1, torch.cuda.device_count())}"
    return device


def make_executor(scale: ScaleSpec) -> LocalExecutor | DaskExecutor:
    if scale.mode == "dask":
        return DaskExecutor(scale)
    return LocalExecutor(overlap=scale.overlap)
