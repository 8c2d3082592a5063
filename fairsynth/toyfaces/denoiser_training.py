"""The one training loop of the toy world's denoisers (the pixel DDPM and the text-to-image
UNet): epsilon prediction with min-SNR weighting, linear warm-up, gradient clipping, an EMA of
the weights, and a state folder to resume from. Batches and noise derive from (seed, step), so
an interrupted and resumed run follows the same trajectory as an uninterrupted one."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from fairsynth.toyfaces.training_state import load_optimizer, optimizer_moments, save_state

# step -> (x0 in the UNet's space, extra UNet arguments such as encoder_hidden_states)
BatchFn = Callable[[int], tuple[torch.Tensor, dict]]


@dataclass(frozen=True)
class Recipe:
    """``steps`` in all (not additional); a checkpoint every ``checkpoint_every`` steps."""

    steps: int
    batch_size: int = 64
    lr: float = 4e-4
    warmup: int = 200
    ema_decay: float = 0.9995
    min_snr_gamma: float = 5.0
    seed: int = 0
    checkpoint_every: int = 250


@dataclass
class Run:
    """What the loop trains and where: the UNet, its scheduler's config, the state folder,
    ``meta`` for a fresh start (a saved state's replaces it), a name for the log, and what to
    do after each checkpoint (e.g. export the EMA weights; given the meta)."""

    unet: torch.nn.Module
    scheduler_config: dict
    state_dir: Path
    meta: dict
    name: str
    after_checkpoint: Callable[[dict], None] | None = None


def train_denoiser(run: Run, recipe: Recipe, batch: BatchFn) -> dict:
    """Train ``run.unet`` to ``recipe.steps``, resuming from ``run.state_dir``; the meta."""
    unet, r = run.unet.train(), recipe
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=r.lr, weight_decay=0.0)
    sched = DDPMScheduler(**run.scheduler_config)
    snr = sched.alphas_cumprod.float() / (1 - sched.alphas_cumprod.float())
    loss_weight = torch.clamp(snr, max=r.min_snr_gamma) / snr
    meta = {"step": 0, "log": [], "seconds": 0.0, "seed": r.seed, **run.meta}
    if (run.state_dir / "meta.json").is_file():
        meta = json.loads((run.state_dir / "meta.json").read_text())
        unet.load_state_dict(load_file(run.state_dir / "model.safetensors"))
        ema = load_file(run.state_dir / "ema.safetensors")
        load_optimizer(opt, load_file(run.state_dir / "optim.safetensors"), meta["step"])
        print(f"[{run.name}] resumed at step {meta['step']}", flush=True)
    segments = meta.setdefault("lr_segments", [[0, r.lr]])
    if segments[-1][1] != r.lr:
        segments.append([meta["step"], r.lr])  # the recipe, as it was actually run
    meta["first_step"], meta["first_seconds"] = meta["step"], meta["seconds"]
    t_start, window = time.time(), []
    while meta["step"] < r.steps:
        step = meta["step"]
        for group in opt.param_groups:
            group["lr"] = r.lr * min(1.0, (step + 1) / r.warmup)
        x0, extra = batch(step)
        gen = torch.Generator().manual_seed(r.seed * 1_000_003 + step)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(x0),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        pred = unet(sched.add_noise(x0, noise, t), t, **extra).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema_update(ema, unet, min(r.ema_decay, (1 + step) / (10 + step)))
        window.append(float(per_sample.detach().mean()))
        meta["step"] = step + 1
        if meta["step"] % 50 == 0:
            log_window(meta, window, t_start, run.name)
        if meta["step"] % r.checkpoint_every == 0 or meta["step"] == r.steps:
            meta["seconds"] += time.time() - t_start
            tensors = {"model": unet.state_dict(), "ema": ema, "optim": optimizer_moments(opt)}
            save_state(run.state_dir, tensors, meta)
            if run.after_checkpoint is not None:
                run.after_checkpoint(meta)
            t_start = time.time()  # training time only: saving and exporting are not counted
    return meta


@torch.no_grad()
def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        else:
            ema[k].copy_(v)


def log_window(meta: dict, window: list[float], t_start: float, what: str) -> None:
    """Log the mean loss of the steps since the last log, with the time and rate."""
    elapsed = meta["seconds"] + time.time() - t_start
    meta["log"].append([meta["step"], round(sum(window) / len(window), 5), round(elapsed)])
    rate = (elapsed - meta["first_seconds"]) / max(1, meta["step"] - meta["first_step"])
    print(
        f"[{what}] step {meta['step']} loss {meta['log'][-1][1]:.5f} "
        f"{elapsed / 60:.1f} min ({rate:.3f} s/step)",
        flush=True,
    )
    window.clear()
