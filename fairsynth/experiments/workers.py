"""The downstream experiment's runs on worker processes: one torch thread a run, in order."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


def map_runs(
    run_one: Callable, params, sets: dict, test, jobs: list[tuple], workers: int
) -> Iterator[dict]:
    """Each (scenario, setting, seed) run, in order, in this process or in ``workers`` spawned
    processes; one torch thread a run either way, so the figures do not depend on ``workers``."""
    if workers <= 1:
        for scenario, setting, seed in jobs:
            yield _one_thread(run_one, params, scenario, setting, seed, sets[scenario], test)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_worker_init, initargs=(run_one, params, sets, test),
    ) as pool:  # fmt: skip
        yield from pool.map(_worker_run, jobs)


_WORKER: dict = {}


def _worker_init(run_one: Callable, params, sets: dict, test) -> None:
    _WORKER.update(run_one=run_one, params=params, sets=sets, test=test)


def _worker_run(job: tuple) -> dict:
    scenario, setting, seed = job
    w = _WORKER
    return _one_thread(
        w["run_one"], w["params"], scenario, setting, seed, w["sets"][scenario], w["test"]
    )


def _one_thread(fn, *args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)
