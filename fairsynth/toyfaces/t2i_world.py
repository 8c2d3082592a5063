"""The toy text-to-image world: four "profession" prompts whose faces carry different biases
over skin x eyeglasses x hair, a neutral prompt with their mixture, and the architectures of the
tiny Stable-Diffusion-layout model (VAE, frozen random CLIP text encoder with a word-level
tokenizer, UNet with cross-attention). Trained by ``train_t2i``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    AutoencoderKL,
    UNet2DConditionModel,
)
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from fairsynth.diffusion.dummy import bytes_to_unicode
from fairsynth.toyfaces.render import ATTRIBUTES, FaceParams, sample_params

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
