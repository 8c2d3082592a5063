"""Generation on Dask workers through Prefect: prefect-dask's ``DaskTaskRunner`` runs one
Prefect task per batch spec (``fairsynth.run.executors.produce_on_worker``); the flow judges the
results in batch order (quotas, ledger, shards stay in the flow's process)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext

import dask
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect_dask import DaskTaskRunner

from fairsynth.app.config import Params
from fairsynth.app.runspec import scale_spec
from fairsynth.run.executors import local_cluster_kwargs, make_local_cluster, produce_on_worker
from fairsynth.run.spec import ProducerRecipe, ScaleSpec
from fairsynth.run.windows import BatchOutput, BatchSpec


def dask_task_runner(params: Params) -> DaskTaskRunner:
    """The task runner for ``scale``: an existing scheduler, or a local cluster of processes
    (``make_local_cluster``: on a GPU machine one worker per GPU, dask_cuda's when installed)."""
    scale = scale_spec(params)
    if scale.address:
        return DaskTaskRunner(address=scale.address)
    return DaskTaskRunner(
        cluster_class=make_local_cluster, cluster_kwargs=local_cluster_kwargs(scale)
    )


# Retries here cover errors inside a batch; a worker that dies is handled by Dask, which runs
# the task again on another worker. Never cached: a batch is produced once per spec and run.
@task(name="produce-batch", retries=2, retry_delay_seconds=1, cache_policy=NO_CACHE)
def produce_batch_task(recipe: ProducerRecipe, spec: BatchSpec) -> BatchOutput:
    return produce_on_worker(recipe, spec)


class PrefectDaskExecutor:
    """``fairsynth.run.executors.Executor`` on the flow's ``DaskTaskRunner`` (call inside the flow)."""

    def __init__(self, scale: ScaleSpec):
        self.scale = scale

    def map(self, recipe: ProducerRecipe, specs: list[BatchSpec]) -> Iterator[BatchOutput]:
        resources = self.scale.batch_resources
        with dask.annotate(resources=resources) if resources else nullcontext():
            futures = [produce_batch_task.submit(recipe, spec) for spec in specs]
        try:
            for future in futures:
                yield future.result()
        finally:
            for future in futures:
                future.wrapped_future.cancel()  # the rest of a window not needed (done ones: no-op)

    def close(self) -> None:
        pass  # the flow's task runner owns the cluster
