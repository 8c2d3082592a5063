"""The trained toy text-to-image model as a diffusers folder (EMA UNet, VAE, text encoder,
tokenizer, scheduler; ``fairsynth.json`` with the prompts and their class distributions), and
the check that the VAE keeps the attributes (each prompt's bias: ``audit_t2i``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    StableDiffusionPipeline,
)
from safetensors.torch import load_file

from fairsynth.core.folders import swap_in
from fairsynth.toyfaces.render import ATTRIBUTES, render, sample_params
from fairsynth.toyfaces.t2i_world import (
    DDIM_EXTRA,
    NEUTRAL_PROMPT,
    PROMPT_DROPOUT,
    SCHEDULER_CONFIG,
    VERIFIER,
    images_to_tensor,
    load_vae,
    new_unet,
    prompt_distributions,
    text_components,
)
from fairsynth.verify.classifier import AttributeClassifier


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
    swap_in(tmp, out)


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
