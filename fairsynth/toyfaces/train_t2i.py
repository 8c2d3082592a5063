"""Train a tiny Stable-Diffusion-layout text-to-image model on toy faces, with a bias per prompt.

Four "profession" prompts carry different biases over skin x eyeglasses x hair by construction
(``PROMPTS``); the neutral prompt ``NEUTRAL_PROMPT`` shows the mixture of the four. Three stages,
each resumable (run it again to continue; ``--steps`` is the total, not additional)::

    python -m fairsynth.toyfaces.train_t2i vae --state training/t2i --steps 1500
    python -m fairsynth.toyfaces.train_t2i check-vae --state training/t2i
    python -m fairsynth.toyfaces.train_t2i unet --state training/t2i --steps 20000 \
        --export fairsynth/toyfaces/weights/t2i --export-every 1000
    python -m fairsynth.toyfaces.train_t2i export --state training/t2i \
        --out fairsynth/toyfaces/weights/t2i
    python -m fairsynth.toyfaces.train_t2i check --model fairsynth/toyfaces/weights/t2i

The VAE (32x32x3 -> 8x8x4) trains first on fresh attribute-balanced renders; its latent
scaling factor (1 / std of the latents) goes into its config. The CLIP text encoder stays frozen
at its random init (the UNet learns to read it); it and the word-level tokenizer are written once
into the state folder. The UNet trains on a fixed, pre-encoded set of faces per prompt, with 10 %
prompt dropout (the empty prompt) so classifier-free guidance works. State is safetensors plus
``meta.json``, saved atomically; batches and noise derive from (seed, step), so an interrupted
and resumed run follows the same trajectory. Export writes the EMA UNet into a diffusers folder
loadable by ``StableDiffusionPipeline.from_pretrained``, with ``fairsynth.json`` holding the
prompts, their class distributions and how the model was trained.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
)
from safetensors.torch import load_file, save_file

from fairsynth.toyfaces.denoiser_training import Recipe, Run, log_window, train_denoiser
from fairsynth.toyfaces.render import FaceParams, render, sample_params
from fairsynth.toyfaces.t2i_export import check_vae, export_pipeline
from fairsynth.toyfaces.t2i_world import (
    PROMPT_DROPOUT,
    PROMPTS,
    SCHEDULER_CONFIG,
    all_prompts,
    encode_prompts,
    images_to_tensor,
    load_vae,
    new_unet,
    new_vae,
    prompt_faces,
    text_components,
)
from fairsynth.toyfaces.training_state import load_optimizer, optimizer_moments, save_state


def _set_lr(opt: torch.optim.Optimizer, lr: float, step: int, warmup: int) -> None:
    for group in opt.param_groups:
        group["lr"] = lr * min(1.0, (step + 1) / warmup)


# --- VAE -------------------------------------------------------------------------------------


def train_vae(
    root: Path,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    checkpoint_every: int = 250,
    threads: int = 1,
) -> None:
    """Reconstruction (L1 + MSE) plus a small KL, on fresh attribute-balanced renders."""
    torch.set_num_threads(threads)
    state_dir = root / "vae"
    torch.manual_seed(seed)
    vae = new_vae().train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    meta = {"step": 0, "log": [], "seconds": 0.0, "seed": seed, "kl_weight": kl_weight}
    if (state_dir / "meta.json").is_file():
        meta = json.loads((state_dir / "meta.json").read_text())
        vae.load_state_dict(load_file(state_dir / "model.safetensors"))
        load_optimizer(opt, load_file(state_dir / "optim.safetensors"), meta["step"])
        print(f"[vae] resumed at step {meta['step']}", flush=True)
    # The cosine schedule spans the total steps; record where that total changed.
    schedule = meta.setdefault("total_steps_segments", [[0, steps]])
    if schedule[-1][1] != steps:
        schedule.append([meta["step"], steps])
    meta["first_step"], meta["first_seconds"] = meta["step"], meta["seconds"]
    t_start, window = time.time(), []
    while meta["step"] < steps:
        step = meta["step"]
        _set_lr(opt, lr * 0.5 * (1 + np.cos(np.pi * step / steps)), step, 100)
        rng = np.random.default_rng([seed, 1, step])
        x = images_to_tensor(render(sample_params(batch_size, rng)))
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        posterior = vae.encode(x).latent_dist
        rec = vae.decode(posterior.sample(generator=gen)).sample
        rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
        loss = rec_loss + kl_weight * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        window.append(float(rec_loss.detach()))
        meta["step"] = step + 1
        if meta["step"] % 50 == 0:
            log_window(meta, window, t_start, "vae")
        if meta["step"] % checkpoint_every == 0 or meta["step"] == steps:
            meta["seconds"] += time.time() - t_start
            meta["scaling_factor"] = latent_scaling_factor(vae, seed)
            vae.train()
            moments = optimizer_moments(opt)
            save_state(state_dir, {"model": vae.state_dict(), "optim": moments}, meta)
            t_start = time.time()


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, seed: int, n: int = 2048) -> float:
    """1 / std of the latents (posterior means) of ``n`` faces of the training mixture."""
    vae.eval()
    x = images_to_tensor(render(prompt_faces(len(PROMPTS), n, seed + 7)))
    z = torch.cat([vae.encode(x[s : s + 256]).latent_dist.mode() for s in range(0, n, 256)])
    return float(1.0 / z.std())


@torch.no_grad()
def training_latents(root: Path, n_per_prompt: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled latents (VAE posterior means) of the fixed training faces and their prompt index;
    cached under ``root`` (keyed by the VAE step, ``n_per_prompt`` and ``seed``)."""
    cache, info = root / "latents.safetensors", root / "latents.json"
    vae_meta = json.loads((root / "vae" / "meta.json").read_text())
    key = {"vae_step": vae_meta["step"], "n_per_prompt": n_per_prompt, "seed": seed}
    if not (cache.is_file() and info.is_file() and json.loads(info.read_text()) == key):
        vae = load_vae(root)
        parts, index = [], []
        for i in range(len(all_prompts())):
            params = prompt_faces(i, n_per_prompt, seed)
            for s in range(0, n_per_prompt, 512):
                lo, hi = s, min(s + 512, n_per_prompt)
                sub = FaceParams(**{k: v[lo:hi] for k, v in params.__dict__.items()})
                parts.append(vae.encode(images_to_tensor(render(sub))).latent_dist.mode())
            index.append(torch.full((n_per_prompt,), i, dtype=torch.int64))
            print(f"[latents] prompt {i}: {n_per_prompt} faces encoded", flush=True)
        save_file({"latents": torch.cat(parts).contiguous(), "prompt": torch.cat(index)}, cache)
        info.write_text(json.dumps(key))
    data = load_file(cache)
    return data["latents"] * vae_meta["scaling_factor"], data["prompt"]


def train_unet(root: Path, recipe: Recipe, n_per_prompt: int = 20_000,
               export: Path | None = None, export_every: int = 1000) -> None:  # fmt: skip
    """Epsilon-prediction DDPM training on the latents, text-conditioned, with prompt dropout."""
    seed, batch_size = recipe.seed, recipe.batch_size
    latents, prompt_of = training_latents(root, n_per_prompt, seed)
    tokenizer, encoder = text_components(root)
    embeds = encode_prompts(tokenizer, encoder, [*all_prompts(), ""])  # last: the empty prompt
    by_prompt = [torch.nonzero(prompt_of == i).flatten() for i in range(len(all_prompts()))]

    def batch(step: int) -> tuple[torch.Tensor, dict]:
        x0, cond = _unet_batch(latents, by_prompt, embeds, batch_size, seed, step)
        return x0, {"encoder_hidden_states": cond}

    def after_checkpoint(meta: dict) -> None:
        if export is not None and (
            meta["step"] % export_every == 0 or meta["step"] == recipe.steps
        ):
            export_pipeline(root, export)
            print(f"[unet] exported step {meta['step']} to {export}", flush=True)

    meta = {"n_per_prompt": n_per_prompt, "batch_size": batch_size,
            "prompt_dropout": PROMPT_DROPOUT, "min_snr_gamma": recipe.min_snr_gamma}  # fmt: skip
    run = Run(new_unet(), SCHEDULER_CONFIG, root / "unet", meta, "unet", after_checkpoint)
    train_denoiser(run, recipe, batch)


def _unet_batch(
    latents: torch.Tensor,
    by_prompt: list[torch.Tensor],
    embeds: torch.Tensor,
    batch_size: int,
    seed: int,
    step: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch from (seed, step): a uniform prompt per sample, a face of that prompt, and the
    prompt's hidden states (the empty prompt's with probability PROMPT_DROPOUT)."""
    rng = np.random.default_rng([seed, 2, step])
    which = rng.integers(0, len(by_prompt), batch_size)
    pick = rng.random(batch_size)
    idx = torch.stack(
        [by_prompt[w][int(u * len(by_prompt[w]))] for w, u in zip(which, pick, strict=True)]
    )
    drop = rng.random(batch_size) < PROMPT_DROPOUT
    prompt = torch.from_numpy(np.where(drop, len(by_prompt), which))
    return latents[idx].contiguous(), embeds[prompt]


# --- export and check -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("vae", "unet"):
        p = sub.add_parser(name)
        p.add_argument("--state", type=Path, default=Path("training/t2i"))
        p.add_argument("--steps", type=int, required=True, help="total steps (not additional)")
        p.add_argument("--batch-size", type=int, default=32 if name == "vae" else 64)
        p.add_argument("--lr", type=float, default=1e-3 if name == "vae" else 4e-4)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--checkpoint-every", type=int, default=250)
        p.add_argument("--threads", type=int, default=1)
    sub.choices["unet"].add_argument("--n-per-prompt", type=int, default=20_000)
    sub.choices["unet"].add_argument("--export", type=Path, default=None)
    sub.choices["unet"].add_argument("--export-every", type=int, default=1000)
    p = sub.add_parser("check-vae")
    p.add_argument("--state", type=Path, default=Path("training/t2i"))
    p = sub.add_parser("export")
    p.add_argument("--state", type=Path, default=Path("training/t2i"))
    p.add_argument("--out", type=Path, default=Path("fairsynth/toyfaces/weights/t2i"))
    p = sub.add_parser("check")
    p.add_argument("--model", type=Path, default=Path("fairsynth/toyfaces/weights/t2i"))
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    if a.cmd == "vae":
        train_vae(a.state, a.steps, a.batch_size, a.lr, seed=a.seed, threads=a.threads,
                  checkpoint_every=a.checkpoint_every)  # fmt: skip
    elif a.cmd == "unet":
        torch.set_num_threads(a.threads)
        recipe = Recipe(a.steps, a.batch_size, a.lr, seed=a.seed,
                        checkpoint_every=a.checkpoint_every)  # fmt: skip
        train_unet(a.state, recipe, a.n_per_prompt, a.export, a.export_every)
    elif a.cmd == "check-vae":
        torch.set_num_threads(1)
        report = check_vae(a.state)
        (a.state / "vae_check.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    elif a.cmd == "export":
        export_pipeline(a.state, a.out)
    else:  # the same audit as `fairsynth toyfaces audit-t2i`, at one scale
        from fairsynth.toyfaces.audit_model import Engine, Sampling
        from fairsynth.toyfaces.audit_t2i import audit_text2image, format_t2i_report

        torch.set_num_threads(a.threads)
        how = Sampling(n=a.n, steps=a.steps)
        report = audit_text2image(how, (a.cfg_scale,), engine=Engine(model_path=a.model))
        print(format_t2i_report(report))


if __name__ == "__main__":
    main()
