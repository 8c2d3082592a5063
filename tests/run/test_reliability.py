"""Crash safety: real SIGKILLs at random moments, a disk that fills up mid-write."""

import errno
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fairsynth.app.config import load_params
from fairsynth.app.stages.generate import stage_generate

ROOT = Path(__file__).resolve().parents[2]
RUN = (
    "import sys; from fairsynth.app.config import load_params; "
    "from fairsynth.app.stages.generate import stage_generate; "
    "stage_generate(load_params(sys.argv[1]), None, progress=False)"
)


def _params(tmp_path, tiny_world, out="out"):
    p = tmp_path / f"{out}.yaml"
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 3}}\n"
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        "target: {marginals: {skin: {light: 0.5, dark: 0.5}}}\n"
        "guidance: {mode: distribution, loss: chi2, strength: 1.0, shift: 0, batch_size: 4}\n"
        "verify: {confidence: 0.0}\n"
        "generate: {mode: standalone, n: 16, budget: 48, seed: 11, min_batch: 2}\n"
        f"output: {{dir: {tmp_path / out}, shard_size: 5}}\n"
    )
    return p


def _result(out: Path):
    shards = {p.name: p.read_bytes() for p in sorted(out.glob("*.tar"))}
    return shards, pd.read_parquet(out / "manifest.parquet")


def _spawn(params_file: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUN, str(params_file)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def _started(proc: subprocess.Popen, lock: Path, timeout: float = 120) -> float:
    """Wait until this process holds the output lock (its generation has begun)."""
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        try:
            if json.loads(lock.read_text()).get("pid") == proc.pid:
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    return time.time()


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path, tiny_world):
    whole = _params(tmp_path, tiny_world, "whole")
    proc = _spawn(whole)
    start = _started(proc, tmp_path / "whole.lock")
    assert proc.wait() == 0, proc.stderr.read().decode()
    generation = max(0.2, time.time() - start)  # the part of a run a kill should land in
    expected_shards, expected_manifest = _result(tmp_path / "whole")
    rng = np.random.default_rng(0)
    kills = 0
    for trial in range(2):
        params = _params(tmp_path, tiny_world, f"killed{trial}")
        out = tmp_path / f"killed{trial}"
        for attempt in range(4):  # three kills at random moments, then a resume left to finish
            proc = _spawn(params)
            _started(proc, tmp_path / f"killed{trial}.lock")
            try:
                code = proc.wait(
                    timeout=rng.uniform(0.0, 0.8) * generation if attempt < 3 else None
                )
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1  # (killed after index.json was written: that output is complete)
                continue
            assert code == 0, proc.stderr.read().decode()
            break
        assert (out / "index.json").is_file(), "the run never completed"
        shards, manifest = _result(out)
        assert shards == expected_shards
        pd.testing.assert_frame_equal(manifest, expected_manifest)
        assert not list(out.glob("*.tmp")) and not list(tmp_path.glob(f"killed{trial}.ledger/*"))
    assert kills >= 2, "the kills must have landed"


def test_disk_full_mid_shard_loses_nothing(tmp_path, tiny_world, monkeypatch):
    params = load_params(_params(tmp_path, tiny_world, "whole"))
    stage_generate(params, None, progress=False)
    expected_shards, expected_manifest = _result(tmp_path / "whole")

    params = load_params(_params(tmp_path, tiny_world, "full"))
    out = tmp_path / "full"
    real_addfile = tarfile.TarFile.addfile
    calls = {"n": 0}

    def filling_disk(self, tarinfo, fileobj=None):
        calls["n"] += 1
        if calls["n"] == 40:  # well into the run: the ledger or a shard is being written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_addfile(self, tarinfo, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", filling_disk)
    with pytest.raises(OSError, match="No space left"):
        stage_generate(params, None, progress=False)
    monkeypatch.setattr(tarfile.TarFile, "addfile", real_addfile)
    assert not list(out.parent.rglob("*.tmp")), "no half-written file stays behind"
    assert not (out / "index.json").exists(), "an interrupted output never looks complete"
    assert not (tmp_path / "full.lock").exists()
    summary = stage_generate(params, None, progress=False)  # space is back: resume
    assert summary["resumed_at_batch"] > 0, summary["resumed_at_batch"]
    shards, manifest = _result(out)
    assert shards == expected_shards
    pd.testing.assert_frame_equal(manifest, expected_manifest)
    index = json.loads((out / "index.json").read_text())
    assert sum(e["samples"] for e in index["shards"]) == int(manifest["accepted"].sum())
