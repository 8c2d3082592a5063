"""Tiny random "dummy components" (as diffusers' tests build them), for tests and benchmarks:
Stable Diffusion 1.x, SDXL, SD3 and Flux pipelines built offline (no hub access) from tiny
UNets / transformers, VAEs, CLIP and T5 text encoders, a byte-level CLIP tokenizer and a T5
tokenizer written by hand, saved with diffusers' ``save_pretrained`` (the layout of the real
folders)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


def tiny_tokenizer(folder: Path) -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77
    )


def _tiny_vae() -> AutoencoderKL:
    return AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
    )  # fmt: skip


def build_tiny_sd(folder: Path) -> StableDiffusionPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        norm_num_groups=8, attention_head_dim=4,
    )  # fmt: skip
    vae = _tiny_vae()
    tokenizer = tiny_tokenizer(folder / "_tokenizer_src")
    text_encoder = CLIPTextModel(_clip_config(tokenizer))
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder / "sd", safe_serialization=True)
    return pipe


def tiny_t5_tokenizer(max_length: int = 512) -> T5Tokenizer:
    """A T5 (Unigram) tokenizer over printable ASCII, built in memory: no sentencepiece file."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -1.0)]
    pieces += [(chr(c), -2.0) for c in range(33, 127)]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=max_length)


def _clip_config(tokenizer: CLIPTokenizer, **kw) -> CLIPTextConfig:
    return CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=32, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, vocab_size=len(tokenizer),
        max_position_embeddings=77, **kw,
    )  # fmt: skip


def _t5(tokenizer: T5Tokenizer) -> T5EncoderModel:
    return T5EncoderModel(
        T5Config(d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4,
                 relative_attention_num_buckets=8, vocab_size=len(tokenizer),
                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    )  # fmt: skip


def build_tiny_sdxl(folder: Path) -> StableDiffusionXLPipeline:
    """SDXL's layout (two CLIP encoders, the second with a projection; ``text_time`` added
    conditioning) at toy size, saved to ``folder/sdxl``."""
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=4,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
        norm_num_groups=8,
    )  # fmt: skip
    vae = _tiny_vae()
    tokenizer = tiny_tokenizer(folder / "_tokenizer_src")
    pipe = StableDiffusionXLPipeline(
        unet=unet, vae=vae, tokenizer=tokenizer, tokenizer_2=tokenizer,
        text_encoder=CLIPTextModel(_clip_config(tokenizer)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32)),
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085, beta_end=0.012, steps_offset=1, beta_schedule="scaled_linear",
            timestep_spacing="leading",
        ),
        add_watermarker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder / "sdxl", safe_serialization=True)
    return pipe


def _tiny_flow_vae(latent_channels: int) -> AutoencoderKL:
    return AutoencoderKL(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, latent_channels=latent_channels, norm_num_groups=4,
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035,
    )  # fmt: skip


def build_tiny_sd3(folder: Path, num_layers: int = 3) -> StableDiffusion3Pipeline:
    """SD3's layout (an MMDiT of ``num_layers`` joint blocks; two CLIP encoders with
    projections and a T5 encoder), saved to ``folder/sd3``."""
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=1, in_channels=4, num_layers=num_layers, attention_head_dim=8,
        num_attention_heads=4, caption_projection_dim=32, joint_attention_dim=32,
        pooled_projection_dim=64, out_channels=4,
    )  # fmt: skip
    tokenizer, t5_tokenizer = tiny_tokenizer(folder / "_tokenizer_src"), tiny_t5_tokenizer(256)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, vae=_tiny_flow_vae(4), scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32)),
        text_encoder_2=CLIPTextModelWithProjection(_clip_config(tokenizer, projection_dim=32)),
        text_encoder_3=_t5(t5_tokenizer), tokenizer=tokenizer, tokenizer_2=tokenizer,
        tokenizer_3=t5_tokenizer,
    )  # fmt: skip
    pipe.save_pretrained(folder / "sd3", safe_serialization=True)
    return pipe


def build_tiny_flux(folder: Path, num_layers: int = 3) -> FluxPipeline:
    """Flux's layout (``num_layers`` double-stream and one single-stream block, guidance
    embedding as in FLUX.1-dev; CLIP and T5 encoders), saved to ``folder/flux``."""
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4, num_layers=num_layers, num_single_layers=1,
        attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
        pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=True,
    )  # fmt: skip
    tokenizer, t5_tokenizer = tiny_tokenizer(folder / "_tokenizer_src"), tiny_t5_tokenizer(512)
    pipe = FluxPipeline(
        transformer=transformer, vae=_tiny_flow_vae(1), scheduler=FlowMatchEulerDiscreteScheduler(),
        text_encoder=CLIPTextModel(_clip_config(tokenizer)), text_encoder_2=_t5(t5_tokenizer),
        tokenizer=tokenizer, tokenizer_2=t5_tokenizer,
    )  # fmt: skip
    pipe.save_pretrained(folder / "flux", safe_serialization=True)
    return pipe
