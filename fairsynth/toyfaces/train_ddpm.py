"""Train the toy-faces DDPM on the reference dataset. Resumable: run it again to continue.

    python -m fairsynth.toyfaces.train_ddpm --reference data/reference \
        --state training/ddpm --steps 12000 --export fairsynth/toyfaces/weights/ddpm

The state folder holds raw weights, EMA weights and optimiser moments as safetensors plus a
JSON of the step count; batches and noise are derived from (seed, step), so an interrupted and
resumed run follows the same trajectory as an uninterrupted one. ``--export`` writes the EMA
weights as a diffusers model folder (the shipped artefact).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from fairsynth.diffusion.unconditional import DiffusionModel
from fairsynth.toyfaces.dataset import load_reference_images
from fairsynth.toyfaces.denoiser_training import Recipe, Run, train_denoiser

UNET_CONFIG = dict(
    sample_size=16,
    in_channels=12,
    out_channels=12,
    block_out_channels=(64, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
    attention_head_dim=32,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=True,
)
PIXEL_UNSHUFFLE = 2


def new_model() -> DiffusionModel:
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    return DiffusionModel(UNet2DModel(**UNET_CONFIG), dict(scheduler.config), PIXEL_UNSHUFFLE)


def train(reference: Path, state_dir: Path, recipe: Recipe, export: Path | None = None) -> None:
    """Train on the reference's images (random horizontal flips), resuming from ``state_dir``;
    ``export``: the EMA weights as a model folder at every checkpoint."""
    images, _ = load_reference_images(reference)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 (n, 3, 32, 32)
    model = new_model()
    seed, batch_size = recipe.seed, recipe.batch_size

    def batch(step: int) -> tuple[torch.Tensor, dict]:
        rng = np.random.default_rng([seed, step])
        idx = torch.from_numpy(rng.integers(0, len(data), batch_size))
        flip = torch.from_numpy(rng.random(batch_size) < 0.5)
        x0 = data[idx].float() / 127.5 - 1.0
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        return model.to_model_space(x0), {}

    def after_checkpoint(meta: dict) -> None:
        if export is not None:
            export_ema(state_dir, export)

    meta = {"reference": str(reference)}
    run = Run(model.unet, SCHEDULER_CONFIG, state_dir, meta, "ddpm", after_checkpoint)
    train_denoiser(run, recipe, batch)


def export_ema(state_dir: Path, out: Path) -> None:
    meta = json.loads((state_dir / "meta.json").read_text())
    model = new_model()
    model.unet.load_state_dict(load_file(state_dir / "ema.safetensors"))
    model.extra = {
        "training": {
            "steps": meta["step"],
            "seconds": round(meta["seconds"]),
            "final_loss": meta["log"][-1][1] if meta["log"] else None,
            "reference": meta["reference"],
            "weights": "EMA",
            "lr_segments": meta.get("lr_segments"),
        }
    }
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", type=Path, default=Path("data/reference"))
    ap.add_argument("--state", type=Path, default=Path("training/ddpm"))
    ap.add_argument("--steps", type=int, required=True, help="total steps (not additional)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-every", type=int, default=250)
    ap.add_argument("--export", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    if not math.isfinite(a.lr) or a.lr <= 0:
        ap.error("--lr must be positive")
    torch.set_num_threads(a.threads)
    recipe = Recipe(a.steps, a.batch_size, a.lr, seed=a.seed, checkpoint_every=a.checkpoint_every)
    train(a.reference, a.state, recipe, a.export)


if __name__ == "__main__":
    main()
