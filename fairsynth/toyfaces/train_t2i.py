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
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from fairsynth.diffusion.dummy import bytes_to_unicode
from fairsynth.toyfaces.classifiers import AttributeClassifier
from fairsynth.toyfaces.render import ATTRIBUTES, FaceParams, render, sample_params
from fairsynth.toyfaces.training_state import load_optimizer, optimizer_moments, save_state

# Class probabilities per prompt, in ATTRIBUTES order (skin: light, dark; eyeglasses: no, yes;
# hair: black, brown, blond). Attributes are drawn independently within a prompt.
PROMPTS: dict[str, dict[str, tuple[float, ...]]] = {
    "a photo of a doctor": {  # strongly light-skinned
        "skin": (0.9, 0.1),
        "eyeglasses": (0.7, 0.3),
        "hair": (0.5, 0.3, 0.2),
    },
    "a photo of a teacher": {  # mostly with eyeglasses
        "skin": (0.6, 0.4),
        "eyeglasses": (0.2, 0.8),
        "hair": (0.2, 0.3, 0.5),
    },
    "a photo of a nurse": {  # mostly dark-skinned
        "skin": (0.2, 0.8),
        "eyeglasses": (0.85, 0.15),
        "hair": (0.6, 0.3, 0.1),
    },
    "a photo of a chef": {  # near-balanced
        "skin": (0.5, 0.5),
        "eyeglasses": (0.5, 0.5),
        "hair": (0.35, 0.35, 0.3),
    },
}
NEUTRAL_PROMPT = "a photo of a face"  # the mixture of the four professions, in equal parts
MAX_TOKENS = 16
PROMPT_DROPOUT = 0.1
VERIFIER = Path(__file__).parent / "weights" / "verifier"

VAE_CONFIG = dict(  # 32x32x3 -> 8x8x4
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(16, 32, 64),
    layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
    norm_num_groups=8,
    sample_size=32,
)
TEXT_CONFIG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_hidden_layers=2,
    max_position_embeddings=MAX_TOKENS,
)
UNET_CONFIG = dict(  # 8x8x4 latents; attention and text at 4x4x128 and in the mid block
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(64, 128),
    layers_per_block=1,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=TEXT_CONFIG["hidden_size"],
    attention_head_dim=4,  # diffusers' legacy name: the number of heads
    norm_num_groups=32,
)
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    prediction_type="epsilon",
    clip_sample=False,
)
DDIM_EXTRA = dict(set_alpha_to_one=False, steps_offset=1)


# --- prompts and data ---------------------------------------------------------------------


def all_prompts() -> list[str]:
    """The training prompts: the professions, then the neutral prompt."""
    return [*PROMPTS, NEUTRAL_PROMPT]


def prompt_distributions() -> dict[str, dict[str, dict[str, float]]]:
    """Class distribution of every prompt's training faces (the neutral one: the average)."""
    out = {
        p: {a: dict(zip(ATTRIBUTES[a], map(float, probs[a]), strict=True)) for a in ATTRIBUTES}
        for p, probs in PROMPTS.items()
    }
    out[NEUTRAL_PROMPT] = {
        a: {c: round(float(np.mean([out[p][a][c] for p in PROMPTS])), 6) for c in ATTRIBUTES[a]}
        for a in ATTRIBUTES
    }
    return out


def prompt_faces(prompt_index: int, n: int, seed: int) -> FaceParams:
    """``n`` faces for one prompt (deterministic in ``seed``); the neutral prompt draws each
    face from a uniformly chosen profession."""
    rng = np.random.default_rng([seed, prompt_index])
    names = list(PROMPTS)
    if prompt_index < len(names):
        return sample_params(n, rng, PROMPTS[names[prompt_index]])
    which = rng.integers(0, len(names), n)
    labels = {a: np.zeros(n, dtype=np.int64) for a in ATTRIBUTES}
    for j, name in enumerate(names):
        sel = which == j
        for a in ATTRIBUTES:
            labels[a][sel] = rng.choice(len(ATTRIBUTES[a]), size=int(sel.sum()), p=PROMPTS[name][a])
    return sample_params(n, rng, labels=labels)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1], contiguous (channels-last strides are slower)."""
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0).contiguous()


# --- components ---------------------------------------------------------------------------


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    """A CLIP tokenizer whose merges make every prompt word one token (bytes as fallback)."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    merges: list[str] = []
    words = sorted({w for p in all_prompts() for w in p.split()}, key=lambda w: (-len(w), w))
    for word in words:
        parts = [*word[:-1], word[-1] + "</w>"]
        cur = parts[0]
        for nxt in parts[1:]:
            if f"{cur} {nxt}" not in merges:
                merges.append(f"{cur} {nxt}")
            cur += nxt
            vocab.setdefault(cur, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=MAX_TOKENS
    )


def text_components(root: Path, seed: int = 0) -> tuple[CLIPTokenizer, CLIPTextModel]:
    """The frozen tokenizer and text encoder, created once under ``root`` and then loaded."""
    tok_dir, enc_dir = root / "tokenizer", root / "text_encoder"
    if not (enc_dir / "config.json").is_file():
        tokenizer = write_tokenizer(root / "tokenizer_src")
        torch.manual_seed(seed)
        config = CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            vocab_size=len(tokenizer),
            **TEXT_CONFIG,
        )
        CLIPTextModel(config).save_pretrained(enc_dir, safe_serialization=True)
        tokenizer.save_pretrained(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    encoder = CLIPTextModel.from_pretrained(enc_dir).eval().requires_grad_(False)
    return tokenizer, encoder


@torch.no_grad()
def encode_prompts(
    tokenizer: CLIPTokenizer, encoder: CLIPTextModel, prompts: list[str]
) -> torch.Tensor:
    """Hidden states as StableDiffusionPipeline.encode_prompt computes them: (n, MAX_TOKENS, d)."""
    ids = tokenizer(
        prompts,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    return encoder(ids)[0].contiguous()


def new_vae(scaling_factor: float = 1.0) -> AutoencoderKL:
    return AutoencoderKL(**VAE_CONFIG, scaling_factor=scaling_factor)


def new_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(**UNET_CONFIG)


def load_vae(root: Path) -> AutoencoderKL:
    """The trained VAE with its recorded scaling factor, frozen."""
    meta = json.loads((root / "vae" / "meta.json").read_text())
    vae = new_vae(meta.get("scaling_factor", 1.0))
    vae.load_state_dict(load_file(root / "vae" / "model.safetensors"))
    return vae.eval().requires_grad_(False)


# --- state ---------------------------------------------------------------------------------


def _set_lr(opt: torch.optim.Optimizer, lr: float, step: int, warmup: int) -> None:
    for group in opt.param_groups:
        group["lr"] = lr * min(1.0, (step + 1) / warmup)


def _log(meta: dict, window: list[float], t_start: float, what: str) -> None:
    elapsed = meta["seconds"] + time.time() - t_start
    meta["log"].append([meta["step"], round(sum(window) / len(window), 5), round(elapsed)])
    rate = (elapsed - meta["first_seconds"]) / max(1, meta["step"] - meta["first_step"])
    print(
        f"[{what}] step {meta['step']} loss {meta['log'][-1][1]:.5f} "
        f"{elapsed / 60:.1f} min ({rate:.3f} s/step)",
        flush=True,
    )
    window.clear()


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
            _log(meta, window, t_start, "vae")
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
def check_vae(root: Path, n: int = 2048, seed: int = 424_242, confidence: float = 0.9) -> dict:
    """Verifier on fresh balanced renders and their reconstructions: accuracy per attribute,
    agreement of reconstruction and original predictions, confident fractions."""
    vae = load_vae(root)
    verifier = AttributeClassifier.load(VERIFIER)
    images = render(params := sample_params(n, np.random.default_rng(seed)))
    x = images_to_tensor(images)
    rec = torch.cat(
        [vae.decode(vae.encode(x[s : s + 256]).latent_dist.mode()).sample for s in range(0, n, 256)]
    ).clamp(-1, 1)
    p_orig, p_rec = verifier.predict_proba(x), verifier.predict_proba(rec)
    labels = params.labels()
    report = {"n": n, "mae": float((rec - x).abs().mean())}
    for a in ATTRIBUTES:
        report[f"{a}_accuracy"] = float((p_rec[a].argmax(1) == labels[a]).mean())
        report[f"{a}_agreement"] = float((p_rec[a].argmax(1) == p_orig[a].argmax(1)).mean())
    conf = lambda p: np.min([p[a].max(1) for a in ATTRIBUTES], axis=0)  # noqa: E731
    report["confident_fraction_reconstruction"] = float((conf(p_rec) >= confidence).mean())
    report["confident_fraction_original"] = float((conf(p_orig) >= confidence).mean())
    all_ok = np.all([p_rec[a].argmax(1) == labels[a] for a in ATTRIBUTES], axis=0)
    report["all_attributes_correct"] = float(all_ok.mean())
    report["scaling_factor"] = vae.config.scaling_factor
    return report


# --- UNet ------------------------------------------------------------------------------------


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


def train_unet(
    root: Path,
    steps: int,
    batch_size: int = 64,
    lr: float = 4e-4,
    warmup: int = 200,
    ema_decay: float = 0.9995,
    min_snr_gamma: float = 5.0,
    n_per_prompt: int = 20_000,
    seed: int = 0,
    checkpoint_every: int = 250,
    export: Path | None = None,
    export_every: int = 1000,
    threads: int = 1,
) -> None:
    """Epsilon-prediction DDPM training on the latents, text-conditioned, with prompt dropout."""
    torch.set_num_threads(threads)
    state_dir = root / "unet"
    latents, prompt_of = training_latents(root, n_per_prompt, seed)
    tokenizer, encoder = text_components(root)
    embeds = encode_prompts(tokenizer, encoder, [*all_prompts(), ""])  # last: the empty prompt
    by_prompt = [torch.nonzero(prompt_of == i).flatten() for i in range(len(all_prompts()))]
    unet = new_unet().train()
    ema = {k: v.detach().clone() for k, v in unet.state_dict().items()}
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    sched = DDPMScheduler(**SCHEDULER_CONFIG)
    snr = sched.alphas_cumprod.float() / (1 - sched.alphas_cumprod.float())
    loss_weight = torch.clamp(snr, max=min_snr_gamma) / snr
    meta = {
        "step": 0,
        "log": [],
        "seconds": 0.0,
        "seed": seed,
        "n_per_prompt": n_per_prompt,
        "batch_size": batch_size,
        "prompt_dropout": PROMPT_DROPOUT,
        "min_snr_gamma": min_snr_gamma,
    }
    if (state_dir / "meta.json").is_file():
        meta = json.loads((state_dir / "meta.json").read_text())
        unet.load_state_dict(load_file(state_dir / "model.safetensors"))
        ema = load_file(state_dir / "ema.safetensors")
        load_optimizer(opt, load_file(state_dir / "optim.safetensors"), meta["step"])
        print(f"[unet] resumed at step {meta['step']}", flush=True)
    segments = meta.setdefault("lr_segments", [[0, lr]])
    if segments[-1][1] != lr:
        segments.append([meta["step"], lr])
    meta["first_step"], meta["first_seconds"] = meta["step"], meta["seconds"]
    t_start, window = time.time(), []
    while meta["step"] < steps:
        step = meta["step"]
        _set_lr(opt, lr, step, warmup)
        x0, cond = _unet_batch(latents, by_prompt, embeds, batch_size, seed, step)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        t = torch.randint(0, sched.config.num_train_timesteps, (batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        pred = unet(sched.add_noise(x0, noise, t), t, encoder_hidden_states=cond).sample
        per_sample = F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * loss_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        _ema_update(ema, unet, min(ema_decay, (1 + step) / (10 + step)))
        window.append(float(per_sample.detach().mean()))
        meta["step"] = step + 1
        if meta["step"] % 50 == 0:
            _log(meta, window, t_start, "unet")
        if meta["step"] % checkpoint_every == 0 or meta["step"] == steps:
            meta["seconds"] += time.time() - t_start
            tensors = {"model": unet.state_dict(), "ema": ema, "optim": optimizer_moments(opt)}
            save_state(state_dir, tensors, meta)
            if export is not None and (meta["step"] % export_every == 0 or meta["step"] == steps):
                export_pipeline(root, export)
                print(f"[unet] exported step {meta['step']} to {export}", flush=True)
            t_start = time.time()  # training time only: saving and exporting are not counted


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


@torch.no_grad()
def _ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    for k, v in model.state_dict().items():
        if v.dtype.is_floating_point:
            ema[k].mul_(decay).add_(v.detach(), alpha=1 - decay)
        else:
            ema[k].copy_(v)


# --- export and check -------------------------------------------------------------------------


def export_pipeline(root: Path, out: Path) -> None:
    """Write the EMA UNet, VAE, text encoder, tokenizer and a DDIM scheduler as a diffusers
    Stable Diffusion folder (atomically), plus fairsynth.json and a README."""
    unet_meta = json.loads((root / "unet" / "meta.json").read_text())
    vae_meta = json.loads((root / "vae" / "meta.json").read_text())
    unet = new_unet()
    unet.load_state_dict(load_file(root / "unet" / "ema.safetensors"))
    tokenizer, encoder = text_components(root)
    scheduler = DDIMScheduler(**SCHEDULER_CONFIG, **DDIM_EXTRA)
    pipe = StableDiffusionPipeline(
        vae=load_vae(root),
        text_encoder=encoder,
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    info = _export_info(unet_meta, vae_meta)
    if (root / "vae_check.json").is_file():
        info["training"]["vae"]["verifier_check"] = json.loads(
            (root / "vae_check.json").read_text()
        )
    (tmp / "fairsynth.json").write_text(json.dumps(info, indent=2) + "\n")
    (tmp / "README.md").write_text(_readme(info))
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _export_info(unet_meta: dict, vae_meta: dict) -> dict:
    return {
        "prompts": prompt_distributions(),
        "neutral_prompt": NEUTRAL_PROMPT,
        "empty_prompt_dropout": unet_meta.get("prompt_dropout", PROMPT_DROPOUT),
        "image_size": 32,
        "training": {
            "unet": {
                "steps": unet_meta["step"],
                "seconds": round(unet_meta["seconds"]),
                "final_loss": unet_meta["log"][-1][1] if unet_meta["log"] else None,
                "batch_size": unet_meta.get("batch_size"),
                "lr_segments": unet_meta.get("lr_segments"),
                "min_snr_gamma": unet_meta.get("min_snr_gamma"),
                "weights": "EMA",
            },
            "vae": {
                "steps": vae_meta["step"],
                "seconds": round(vae_meta["seconds"]),
                "final_loss": vae_meta["log"][-1][1] if vae_meta["log"] else None,
                "kl_weight": vae_meta.get("kl_weight"),
                "scaling_factor": vae_meta.get("scaling_factor"),
            },
            "text_encoder": "frozen at random init (seed 0)",
            "data": (
                f"{unet_meta.get('n_per_prompt')} procedural toy faces per prompt "
                f"(fairsynth.toyfaces.render, seed {unet_meta.get('seed')}), attributes drawn "
                "independently per profession prompt; the neutral prompt's faces are an equal "
                "mixture of the professions' faces"
            ),
            "code": "python -m fairsynth.toyfaces.train_t2i",
        },
    }


def _readme(info: dict) -> str:
    lines = [
        "# Toy-faces text-to-image model (tiny Stable Diffusion layout)",
        "",
        "Made by `python -m fairsynth.toyfaces.train_t2i` (vae, then unet, then export):",
        f"VAE {info['training']['vae']['steps']} steps, UNet {info['training']['unet']['steps']} "
        f"steps ({info['training']['unet']['seconds']} s, batch 64, one CPU thread), "
        "EMA weights; text encoder frozen at random init.",
        f"Data: {info['training']['data']}.",
        "",
        "Training class distributions per prompt (also in `fairsynth.json`):",
        "",
    ]
    for prompt, dist in info["prompts"].items():
        parts = "; ".join(
            f"{a} " + ", ".join(f"{c} {p:.3g}" for c, p in d.items()) for a, d in dist.items()
        )
        lines.append(f"- `{prompt}`: {parts}")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def check_export(
    model: Path, n: int = 64, cfg_scale: float = 3.0, steps: int = 25, seed: int = 0
) -> dict:
    """Sample ``n`` images per prompt from the exported folder; verifier class fractions and
    confident fraction next to the training distribution."""
    pipe = StableDiffusionPipeline.from_pretrained(
        str(model), safety_checker=None, requires_safety_checker=False, local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    verifier = AttributeClassifier.load(VERIFIER)
    expected = json.loads((model / "fairsynth.json").read_text())["prompts"]
    report = {}
    for i, prompt in enumerate(expected):
        t0 = time.time()
        out = pipe(
            prompt,
            num_images_per_prompt=n,
            num_inference_steps=steps,
            guidance_scale=cfg_scale,
            generator=torch.Generator().manual_seed(seed + i),
            output_type="pt",
        ).images
        probs = verifier.predict_proba(out * 2 - 1)
        conf = np.min([probs[a].max(1) for a in ATTRIBUTES], axis=0)
        row = {"seconds": round(time.time() - t0, 1), "confident": float((conf >= 0.9).mean())}
        for a in ATTRIBUTES:
            frac = np.bincount(probs[a].argmax(1), minlength=len(ATTRIBUTES[a])) / n
            row[a] = {c: round(float(f), 3) for c, f in zip(ATTRIBUTES[a], frac, strict=True)}
            row[a + "_expected"] = expected[prompt][a]
        report[prompt] = row
        print(prompt, json.dumps(row), flush=True)
    return report


# --- CLI -------------------------------------------------------------------------------------


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
        train_unet(a.state, a.steps, a.batch_size, a.lr, n_per_prompt=a.n_per_prompt,
                   seed=a.seed, checkpoint_every=a.checkpoint_every, export=a.export,
                   export_every=a.export_every, threads=a.threads)  # fmt: skip
    elif a.cmd == "check-vae":
        torch.set_num_threads(1)
        report = check_vae(a.state)
        (a.state / "vae_check.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
    elif a.cmd == "export":
        export_pipeline(a.state, a.out)
    else:
        torch.set_num_threads(a.threads)
        check_export(a.model, a.n, a.cfg_scale, a.steps)


if __name__ == "__main__":
    main()
