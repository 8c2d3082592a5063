"""The toy world's one denoiser training loop (both toy trainers run it): a run stopped at a
checkpoint and started again follows the uninterrupted run exactly, and the EMA, the log and
the learning-rate record are kept in the state folder."""

import json

import torch
from diffusers import UNet2DModel
from safetensors.torch import load_file

from fairsynth.toyfaces.denoiser_training import Recipe, Run, train_denoiser

SCHEDULER = dict(num_train_timesteps=100, beta_schedule="linear", prediction_type="epsilon")


def _unet() -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)  # fmt: skip


def _batch(step: int):
    g = torch.Generator().manual_seed(1000 + step)
    return torch.rand(4, 3, 8, 8, generator=g) * 2 - 1, {}


def _train(state, steps: int, checkpoints: list) -> dict:
    recipe = Recipe(steps, batch_size=4, lr=1e-3, warmup=2, checkpoint_every=2, seed=3)
    run = Run(_unet(), SCHEDULER, state, {"note": "x"}, "test", checkpoints.append)
    return train_denoiser(run, recipe, _batch)


def test_a_resumed_run_follows_the_uninterrupted_one(tmp_path, capsys):
    whole, parts = [], []
    _train(tmp_path / "whole", 6, whole)
    _train(tmp_path / "parts", 4, parts)  # stopped after its step-4 checkpoint ...
    meta = _train(tmp_path / "parts", 6, parts)  # ... and started again
    assert "[test] resumed at step 4" in capsys.readouterr().out
    assert [m for m in whole] and meta["step"] == 6 and meta["note"] == "x"
    for name in ("model", "ema", "optim"):
        a = load_file(tmp_path / "whole" / f"{name}.safetensors")
        b = load_file(tmp_path / "parts" / f"{name}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    ema = load_file(tmp_path / "whole" / "ema.safetensors")
    model = load_file(tmp_path / "whole" / "model.safetensors")
    assert any(not torch.equal(ema[k], model[k]) for k in model)  # an average, not a copy
    saved = json.loads((tmp_path / "whole" / "meta.json").read_text())
    assert saved["step"] == 6 and saved["lr_segments"] == [[0, 1e-3]] and saved["seed"] == 3
    assert len(whole) == 3 and len(parts) == 3  # a checkpoint every 2 steps, each handed on
