"""`dvc repro` of the project's own dvc.yaml in a temporary git repo, on a tiny config."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairsynth.app.config import yaml_load

ROOT = Path(__file__).resolve().parents[2]


def _run(cmd, cwd, extra_env=None):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd), **(extra_env or {})}
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
    for package in ("fairsynth", "tasks", "flows"):
        shutil.copytree(
            ROOT / package, repo / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    tiny_model.save(tmp_path / "model")
    params = yaml_load((ROOT / "params.yaml").read_text())
    params["reference"].update(n=64)
    params["model"].update(path=str(tmp_path / "model"), steps=2)
    # a random tiny model: a pseudo-labeller that gives every class (the callable kind)
    shutil.copy(ROOT / "tests" / "labellers.py", repo / "labellers.py")
    params["adp"].update(
        trajectories=12, record_every=1, epochs=1, pseudo_labeller="labellers:cycling"
    )
    params["guidance"].update(batch_size=4)
    params["verify"]["confidence"] = 0.0
    params["generate"].update(n=6, budget=12, accept_partial=True)  # a random model: partial
    params["audit_model"].update(n=4, steps=2, batch_size=4)
    params["downstream"].update(reference_n=20, control_budget=2, test_per_cell=4, seeds=[0, 1],
                                steps=2, batch_size=8, hard={"reference_n": 10})  # fmt: skip
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    torch.manual_seed(0)
    _run(["git", "init", "-q"], repo)
    _run([sys.executable, "-m", "dvc", "init", "-q"], repo)
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")
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

    # the Prefect flow writes the same outputs: byte-stable, so DVC sees nothing to do
    env = {"PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    _run([sys.executable, "-m", "flows.balance", "params.yaml"], repo, env)
    status = _run([sys.executable, "-m", "dvc", "status"], repo)
    assert "changed" not in status, f"the flow run undid dvc repro:\n{status}"

    # a module the generate stage imports (not listed by name) changes: DVC notices
    with open(repo / "fairsynth" / "diffusion" / "sampling.py", "a") as fh:
        fh.write("\n# touched\n")
    status = _run([sys.executable, "-m", "dvc", "status"], repo)
    assert "generate:" in status and "modified:" in status and "fairsynth" in status, status


def _stage_module(cmd: str) -> str:
    words = cmd.split()
    if words[:2] == ["python", "-m"]:
        return words[2]
    assert words[0] == "fairsynth", cmd
    return "fairsynth.app.cli"


def test_each_stage_depends_on_every_module_it_imports():
    """Static import closure (function-level imports too) of each stage's entry module."""
    from modulefinder import ModuleFinder

    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        module = _stage_module(stage["cmd"])
        finder = ModuleFinder(path=[str(ROOT)], excludes=["torch", "diffusers", "transformers"])
        finder.run_script(str(ROOT / (module.replace(".", "/") + ".py")))
        files = {
            Path(m.__file__).resolve().relative_to(ROOT)
            for m in finder.modules.values()
            if m.__file__ and Path(m.__file__).resolve().is_relative_to(ROOT)
        }
        files.add(Path(module.replace(".", "/") + ".py"))
        assert len(files) > 5, (name, files)
        deps = [Path(d) for d in stage["deps"]]
        uncovered = sorted(str(f) for f in files if not any(f.is_relative_to(d) for d in deps))
        assert not uncovered, f"stage {name} imports {uncovered} but does not depend on them"
        # the installed world is found by entry point, not by import: listed by hand
        assert Path("fairsynth/toyfaces") in deps, f"stage {name} does not depend on the world"
        assert Path("fairsynth") not in deps, f"stage {name} depends on the whole library"
    report_deps = {Path(d) for d in stages["report"]["deps"]}
    assert Path("fairsynth/run") not in report_deps, "the report reads the manifest, runs nothing"
