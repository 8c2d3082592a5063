"""Scale-out: window planning, and generation on a local Dask cluster of 2 worker processes
(plain dask.distributed for DVC, prefect-dask's DaskTaskRunner for the flows), a worker killed
mid-run included. Outputs are compared byte for byte with a run in this process."""

import os
import signal
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from fairsynth.app.config import ConfigError, load_params, parse_params
from fairsynth.run.judge import GenerationState, next_batch_size
from fairsynth.run.windows import WindowPolicy, plan_window


def _next_window(quotas, accepted, generated=0, **kw):
    args = dict(size=4, batch_size=64, min_batch=8, budget=10_000, seed=0)
    args.update(kw)
    return plan_window(
        [np.array(q) for q in quotas], [np.array(a) for a in accepted], generated, 0,
        WindowPolicy(**args),
    )  # fmt: skip


def test_window_of_one_is_the_sequential_loop():
    # by hand, batch 64, min_batch 8: a full batch while much is missing, else ceil(1.5 x
    # missing), never below 8
    for missing, size in (([100, 100], 64), ([10, 0], 15), ([3, 2], 8), ([40, 1], 62)):
        state = GenerationState(quotas=np.array(missing), accepted=np.zeros(2, int))
        (spec,) = _next_window([missing], [[0, 0]], size=1)
        assert spec.size == size
        assert next_batch_size(state, 64, 8) == size  # the sequential helper agrees


def test_window_prefers_full_batches_and_respects_budget():
    specs = _next_window([[256, 256]], [[0, 0]], size=8)
    assert [s.size for s in specs] == [64] * 8 and [s.batch for s in specs] == list(range(8))
    assert all(s.window == 0 and s.target == (0.5, 0.5) for s in specs)
    assert [s.size for s in _next_window([[128, 128]], [[0, 0]], size=8)] == [64] * 4  # not 1.5x
    tail = _next_window([[256, 256]], [[256, 250]], size=8)  # 6 missing: one batch of 9, not 8 of 8
    assert [s.size for s in tail] == [9] and tail[0].target == (0.0, 1.0)
    capped = _next_window([[256, 256]], [[0, 0]], generated=100, size=8, budget=200)
    assert [s.size for s in capped] == [64, 36]  # the budget is a hard cap, not a soft stop
    assert _next_window([[256, 256]], [[0, 0]], generated=200, budget=200) == []
    assert _next_window([[5, 5]], [[5, 5]]) == []


def test_window_serves_the_jobs_missing_most_first():
    specs = _next_window([[10, 10], [100, 100], [0, 0]], [[0, 0], [0, 0], [0, 0]], size=6)
    assert [s.job for s in specs] == [1, 1, 1, 1, 0]  # job 1 (200 missing) first, then job 0
    assert [s.size for s in specs] == [64, 64, 64, 12, 30]  # ~what is missing, 1.5x the rest


def test_scale_params_are_validated():
    assert parse_params({}).scale.mode == "local"
    with pytest.raises(ConfigError, match="scale.mode"):
        parse_params({"scale": {"mode": "ray"}})
    with pytest.raises(ConfigError, match="scale.window"):
        parse_params({"scale": {"window": 0}})
    with pytest.raises(ConfigError, match="scale.resources"):
        parse_params({"scale": {"mode": "dask", "resources": {"GPU": -1}}})
    with pytest.raises(ConfigError, match="scale.address"):
        parse_params({"scale": {"mode": "dask", "address": "localhost"}})
    gpu = parse_params({"scale": {"mode": "dask", "resources": {"GPU": 1}}}).scale
    assert gpu.batch_resources() == {"GPU": 1}


def _params(tmp_path, out, scale, n=24):
    p = tmp_path / f"{out}.yaml"
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 6}}\n"
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        # the random tiny world draws one skin class: a target it can meet
        "target: {marginals: {skin: {light: 1.0, dark: 0.0}}}\n"
        "guidance: {mode: distribution, loss: chi2, strength: 1.0, shift: 0, batch_size: 4}\n"
        "verify: {confidence: 0.0}\n"
        f"generate: {{mode: standalone, n: {n}, budget: 400, seed: 3, min_batch: 2}}\n"
        f"output: {{dir: {tmp_path / out}, shard_size: 8}}\n"
        f"scale: {scale}\n"
    )
    return load_params(p)


@pytest.fixture
def local_run(tmp_path, tiny_world):
    """The reference result: the same window, in this process, single-threaded like a worker."""
    from fairsynth.app.stages.generate import stage_generate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = stage_generate(_params(tmp_path, "local", "{window: 4}"), None, progress=False)
    finally:
        torch.set_num_threads(threads)
    return summary, tmp_path / "local"


def test_a_local_run_keeps_this_process_threads(tmp_path, tiny_world):
    """threads_per_worker sizes workers: a local run (dvc repro's default) keeps all of its
    process's threads, so the same params give the same bytes as before Dask existed."""
    from fairsynth.app.stages.generate import stage_generate

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params = _params(tmp_path, "local", "{window: 2, threads_per_worker: 1}", n=4)
        stage_generate(params, None, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_overlapped_verification_gives_the_same_dataset(tmp_path, local_run):
    """Generation on a thread one batch ahead of verification and the ledger: the same
    manifest and shard bytes; the run record splits the time."""
    import json

    from fairsynth.app.stages.generate import stage_generate
    from fairsynth.data.runlog import read_run_record

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params = _params(tmp_path, "overlap", "{window: 4, overlap: true}")
        summary = stage_generate(params, None, progress=False)
    finally:
        torch.set_num_threads(threads)
    _assert_same_dataset(local_run[1], tmp_path / "overlap")
    _assert_quotas_exact(summary, tmp_path / "overlap")
    record = read_run_record(tmp_path / "overlap")
    assert record["scale"]["overlap"] is True and set(record["time_split"]) == {
        "sampling", "verifying", "ledger", "idle"
    }  # fmt: skip
    assert record["time_split"]["sampling"] > 0 and record["time_split"]["verifying"] > 0
    index = json.loads((tmp_path / "overlap" / "index.json").read_text())
    assert "time_split" not in index  # timings vary between runs: beside the output only
    assert read_run_record(local_run[1])["scale"]["overlap"] is False  # auto, on a CPU


def test_overlap_stops_generating_when_the_flow_stops_early(tiny_world):
    """Closing the outputs (quotas met mid-window) stops the generation thread."""
    from fairsynth.run.executors import _overlapped
    from fairsynth.run.windows import BatchSpec

    class Producer:
        made: list[int] = []

        def generate(self, spec):
            self.made.append(spec.batch)
            return np.zeros((1, 2, 2, 3), np.uint8), 0.01

        def verify(self, spec, images, seconds):
            from fairsynth.run.windows import BatchOutput

            return BatchOutput(spec, images, None, seconds, timing={"sample": seconds})

    specs = [BatchSpec(batch=b, job=0, size=1, target=(1.0,), seed=0, window=0) for b in range(20)]
    outputs = _overlapped(Producer(), specs)
    first = next(outputs)
    assert first.spec.batch == 0 and "wait" in first.timing
    outputs.close()
    assert not any(t.name == "fairsynth-generate" for t in threading.enumerate())
    assert len(Producer.made) <= 3  # one ahead (plus one in flight), not the whole window


def _assert_same_dataset(a, b):
    fa, fb = pd.read_parquet(a / "manifest.parquet"), pd.read_parquet(b / "manifest.parquet")
    assert list(fa.loc[fa["accepted"], "key"]) == list(fb.loc[fb["accepted"], "key"])
    assert fa.equals(fb)
    shards = sorted(p.name for p in a.glob("fairsynth-*.tar"))
    assert shards == sorted(p.name for p in b.glob("fairsynth-*.tar"))
    assert all((a / s).read_bytes() == (b / s).read_bytes() for s in shards)


def _assert_quotas_exact(summary, out):
    frame = pd.read_parquet(out / "manifest.parquet")
    acc = frame[frame["accepted"]]
    assert summary["complete"] and summary["accepted"] == summary["quotas"]
    assert acc["key"].is_unique and frame["key"].is_unique
    assert [int((acc["cell"] == c).sum()) for c in summary["cells"]] == summary["quotas"]


@pytest.mark.slow
def test_dask_workers_killed_mid_run_same_dataset(tmp_path, local_run):
    """2 worker processes; one is SIGKILLed while it produces a batch: Dask runs that batch
    again on a worker, the flow counts it once, and the dataset is byte-identical."""
    from fairsynth.app.runspec import scale_spec
    from fairsynth.app.stages.generate import stage_generate
    from fairsynth.run.executors import DaskExecutor

    params = _params(tmp_path, "dask", "{mode: dask, window: 4, n_workers: 2}")
    executor = DaskExecutor(scale_spec(params))
    killed = []

    def kill_a_busy_worker(state):
        if killed:
            return
        busy = {w: keys for w, keys in executor.client.processing().items() if keys}
        if not busy:
            return  # the whole window is done already: try after the next batch
        pids = executor.client.run(os.getpid)
        address = sorted(busy)[0]
        os.kill(pids[address], signal.SIGKILL)
        killed.append((address, busy[address]))

    try:
        summary = stage_generate(params, None, progress=False, on_batch=kill_a_busy_worker,
                                 executor=executor)  # fmt: skip
    finally:
        executor.close()
    assert killed, "no batch was in flight when the test tried to kill a worker"
    _assert_quotas_exact(summary, tmp_path / "dask")
    _assert_same_dataset(local_run[1], tmp_path / "dask")
    assert summary["scale"]["mode"] == "dask" and len(summary["scale"]["workers"]) >= 2


@pytest.mark.slow
def test_prefect_dask_task_runner_same_dataset(tmp_path, local_run):
    """The flow path: batches as Prefect tasks on a DaskTaskRunner with 2 local workers, one
    of them SIGKILLed while it runs a batch task."""
    from prefect import flow
    from prefect.context import FlowRunContext
    from prefect.testing.utilities import prefect_test_harness

    from tasks.pipeline import generate_on_workers
    from tasks.scale import dask_task_runner

    params = _params(tmp_path, "prefect", "{mode: dask, window: 4, n_workers: 2}")
    killed = []

    @flow(task_runner=dask_task_runner(params))
    def generate_only():
        client = FlowRunContext.get().task_runner.client
        stop = threading.Event()

        def kill_first_busy_worker():
            while not stop.is_set() and not killed:
                busy = sorted(w for w, keys in client.processing().items() if keys)
                if busy:
                    os.kill(client.run(os.getpid)[busy[0]], signal.SIGKILL)
                    killed.append(busy[0])
                time.sleep(0.02)

        killer = threading.Thread(target=kill_first_busy_worker)
        killer.start()
        try:
            return generate_on_workers(params, None, None)
        finally:
            stop.set()
            killer.join()

    with prefect_test_harness(server_startup_timeout=120):
        summary = generate_only()
    assert killed
    _assert_quotas_exact(summary, tmp_path / "prefect")
    _assert_same_dataset(local_run[1], tmp_path / "prefect")


def test_balance_flow_runs_on_a_dask_task_runner_when_scale_says_so(tmp_path, tiny_world):
    from prefect_dask import DaskTaskRunner

    from flows.balance import balance, balance_for

    dask_params = _params(tmp_path, "d", "{mode: dask, n_workers: 3, resources: {GPU: 1}}")
    (tmp_path / "local.yaml").write_text((tmp_path / "d.yaml").read_text().replace(
        "scale: {mode: dask, n_workers: 3, resources: {GPU: 1}}", "scale: {mode: local}"
    ))  # fmt: skip
    assert balance_for(str(tmp_path / "local.yaml")) is balance
    runner = balance_for(str(tmp_path / "d.yaml")).task_runner
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["resources"] == {"GPU": 1}
    assert dask_params.scale.batch_resources() == {"GPU": 1}


def _worker_env():
    import os

    import torch

    return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ.get("OMP_NUM_THREADS"),
            torch.get_num_threads())  # fmt: skip


@pytest.mark.slow
def test_local_cluster_workers_start_without_dask_malloc_trim(monkeypatch):
    """Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 (glibc then mmaps every large tensor: a
    1-thread worker ran 2x slower than this process) and OMP_NUM_THREADS=1 whatever the threads
    (a variable set in the environment still wins, as Dask has it)."""
    from distributed import Client

    for name in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    from fairsynth.run.executors import make_local_cluster

    with make_local_cluster(n_workers=1, threads_per_worker=2, processes=True,
                            dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        trim, omp, threads = client.submit(_worker_env, pure=False).result()
    assert (trim, omp, threads) == (None, "2", 2)


def test_workers_of_a_plain_gpu_cluster_take_their_own_gpu(monkeypatch):
    from fairsynth.run import executors

    monkeypatch.setattr(executors, "_worker_name", lambda: "3")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert executors.worker_device("cuda") == "cuda"  # dask_cuda (or none): cuda is its own
    monkeypatch.setenv(executors.PIN_BY_NAME, "1")
    assert executors.worker_device("cuda") == "cuda:3"
    assert executors.worker_device("cuda:1") == "cuda:1"  # a device named in the params stays
    assert executors.worker_device("cpu") == "cpu"
