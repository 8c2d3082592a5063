"""benchmarks/gpu.py at smoke size (the prepared GPU benchmark's code paths, on this CPU), and
compiling a UNet around its hooked layer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairsynth.diffusion.compile import compile_around, is_compiled
from fairsynth.diffusion.hspace import HSpace
from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_benchmark_smoke_run(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = {(r["model"], r["dtype"], r["batch"]) for r in result["results"]}
    assert rows == {(m, d, b) for m in ("celebahq", "sd15") for d in ("float32", "bfloat16")
                    for b in (2, 4)}  # fmt: skip
    for r in result["results"]:
        assert r["unguided"]["images_per_s"] > 0 and r["guided"]["images_per_s"] > 0
        assert r["ratio"] > 0
    assert set(result["profiles"]) == {"celebahq", "sd15"}
    assert all(p["top"] and p["top"][0]["ms"] > 0 for p in result["profiles"].values())
    assert (
        len(result["bars"]) == 4 and "| celebahq | bfloat16 |" in (tmp_path / "gpu.md").read_text()
    )


def test_compile_leaves_the_hooked_layer_eager(tiny_model):
    unet = tiny_model.unet
    compiled = compile_around(unet, "mid_block")
    assert not is_compiled(unet.mid_block) and not is_compiled(unet)
    assert all(is_compiled(m) for m in unet.mid_block.resnets)  # its children are compiled
    assert all(is_compiled(b) for b in (*unet.down_blocks, *unet.up_blocks))
    assert "conv_in" in compiled and "mid_block.resnets.0" in compiled
    assert not any(name == "mid_block" for name in compiled)


@pytest.mark.slow
def test_a_compiled_unet_samples_as_the_eager_one_and_its_hook_edits(tiny_model):
    settings = SamplerSettings(steps=2)
    eager = sample(tiny_model, 2, batch_generator(0, 0), settings)
    compile_around(tiny_model.unet, "mid_block")
    again = sample(tiny_model, 2, batch_generator(0, 0), settings)
    assert torch.allclose(eager, again, atol=1e-4)
    with HSpace(tiny_model.unet, "mid_block") as hsp:
        hsp.edit = lambda h: h * 0
        zeroed = sample(tiny_model, 2, batch_generator(0, 0), settings)
    assert not torch.allclose(zeroed, again, atol=1e-3)  # the hook still edits h
