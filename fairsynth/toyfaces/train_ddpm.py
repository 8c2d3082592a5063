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
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from safetensors.torch import load_file

from fairsynth.diffusion.unconditional import DiffusionModel
from fairsynth.toyfaces.dataset import load_reference_images
from fairsynth.toyfaces.training_state import load_optimizer, optimizer_moments, save_state

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


def train(
    reference: Path,
    state_dir: Path,
    steps: int,
    batch_size: int = 64,
    lr: float = 4e-4,
    warmup: int = 200,
    ema_decay: float = 0.9995,
    min_snr_gamma: float = 5.0,
    seed: int = 0,
    checkpoint_every: int = 250,
    export: Path | None = None,
    threads: int = 2,
) -> None:
    torch.set_num_threads(threads)
    images, _ = load_reference_images(reference)
    data = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # uint8 (n, 3, 32, 32)
    model = new_model()
    unet = model.unet.train()
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    sched = DDPMScheduler(**SCHEDULER_CONFIG)
    alphas_cumprod = sched.alphas_cumprod.float()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    loss_weight = torch.clamp(snr, max=min_snr_gamma) / snr

    meta = {"step": 0, "log": [], "seconds": 0.0, "reference": str(reference), "seed": seed}
    if (state_dir / "meta.json").is_file():
        meta = json.loads((state_dir / "meta.json").read_text())
        unet.load_state_dict(load_file(state_dir / "model.safetensors"))
        ema = load_file(state_dir / "ema.safetensors")
        load_optimizer(opt, load_file(state_dir / "optim.safetensors"), meta["step"])
        print(f"resumed at step {meta['step']}", flush=True)
    segments = meta.setdefault("lr_segments", [[0, lr]])
    if segments[-1][1] != lr:
        segments.append([meta["step"], lr])  # the recipe, as it was actually run

    t_start = time.time()
    window: list[float] = []
    while meta["step"] < steps:
        step = meta["step"]
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup)
        rng = np.random.default_rng([seed, step])
        idx = torch.from_numpy(rng.integers(0, len(data), batch_size))
        flip = torch.from_numpy(rng.random(batch_size) < 0.5)
        x0 = data[idx].float() / 127.5 - 1.0
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        x0 = model.to_model_space(x0)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        xt = sched.add_noise(x0, noise, t)
        pred = unet(xt, t).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in unet.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
                else:
                    ema[k].copy_(v)
        window.append(float(per_sample.detach().mean()))
        meta["step"] = step + 1
        if meta["step"] % 50 == 0:
            elapsed = meta["seconds"] + time.time() - t_start
            meta["log"].append([meta["step"], round(sum(window) / len(window), 5), round(elapsed)])
            print(
                f"step {meta['step']} loss {meta['log'][-1][1]:.4f} {elapsed / 60:.1f} min",
                flush=True,
            )
            window = []
        if meta["step"] % checkpoint_every == 0 or meta["step"] == steps:
            meta["seconds"] += time.time() - t_start
            t_start = time.time()
            _save_state(state_dir, unet, ema, opt, meta)
            if export is not None:
                export_ema(state_dir, export)


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


def _save_state(state_dir: Path, unet, ema, opt, meta) -> None:
    save_state(
        state_dir, {"model": unet.state_dict(), "ema": ema, "optim": optimizer_moments(opt)}, meta
    )


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
    train(
        a.reference,
        a.state,
        a.steps,
        batch_size=a.batch_size,
        lr=a.lr,
        seed=a.seed,
        checkpoint_every=a.checkpoint_every,
        export=a.export,
        threads=a.threads,
    )


if __name__ == "__main__":
    main()
