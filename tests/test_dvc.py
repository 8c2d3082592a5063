"""`dvc repro` of the project's own dvc.yaml in a temporary git repo, on a tiny config."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairsynth.adp import ADP, TrainedADP  # noqa: F401
from fairsynth.config import yaml_load

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, cwd):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd)}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{cmd} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout + r.stderr


@pytest.mark.slow
def test_dvc_repro_twice_second_is_noop(tmp_path, tiny_model):
    import yaml

    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copytree(
        ROOT / "fairsynth", repo / "fairsynth", ignore=shutil.ignore_patterns("__pycache__")
    )
    tiny_model.save(tmp_path / "model")
    params = yaml_load((ROOT / "params.yaml").read_text())
    params["reference"].update(n=64)
    params["model"].update(path=str(tmp_path / "model"), steps=2)
    params["adp"].update(trajectories=12, record_every=1, epochs=1)
    params["guidance"].update(batch_size=4)
    params["verify"]["confidence"] = 0.0
    params["generate"].update(n=6, budget=12)
    params["audit_model"].update(n=4, steps=2, batch_size=4)
    params["downstream"].update(reference_n=20, control_budget=2, test_per_cell=4, seeds=[0, 1],
                                steps=2, batch_size=8)  # fmt: skip
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    torch.manual_seed(0)
    _run(["git", "init", "-q"], repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    first = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage 'generate'" in first
    assert (repo / "data" / "report" / "metrics.json").is_file()
    assert list((repo / "data" / "shards").glob("toyfaces-*.tar"))
    assert (repo / "data" / "downstream" / "metrics.json").is_file()
    second = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage" not in second
    assert "didn't change" in second or "is cached" in second or "up to date" in second.lower()
    status = _run([sys.executable, "-m", "dvc", "status"], repo)
    assert "changed" not in status
