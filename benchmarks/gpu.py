"""Benchmark: the sampling engine at real size on a GPU, unguided vs distribution-guided.

    python benchmarks/gpu.py --out benchmarks/results/gpu            # on a GPU (< 8 min, H100/H200)
    python benchmarks/gpu.py --smoke --out /tmp/gpu-smoke            # tiny sizes: seconds, any CPU

Random-weight UNets built here (no downloads) through fairsynth's own backends and guidance:
``celebahq``, the architecture of ``google/ddpm-celebahq-256`` (UNet2DModel, 256x256 pixels, h =
512x8x8), and ``sd15``, the UNet of Stable Diffusion 1.5 (UNet2DConditionModel, latent 64x64,
cross-attention to 768-d random text embeddings from a one-layer text encoder, CFG 7.5, h =
1280x8x8; a one-block VAE, so decoding, the same for both modes, does not dilute the ratio).
For each model, batch size, dtype (float32, bfloat16) and compile (off, on), both modes run on
the same seeds after a warm-up batch: images/s, peak GPU memory, guided / unguided time. One
configuration per model is profiled (``torch.profiler``, top operators by device time). A
``--budget-s`` guard skips what would not fit and says so. Writes ``gpu.json`` and ``gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from fairsynth.core.attributes import AttributeSpace
from fairsynth.diffusion.compile import compile_around
from fairsynth.diffusion.device import resolve_device, torch_dtype
from fairsynth.diffusion.families import family_of
from fairsynth.diffusion.hspace import HSpace
from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample
from fairsynth.guidance.adp import ADP, TrainedADP
from fairsynth.guidance.guide import DistributionGuidance, GuidanceConfig

SPACE = AttributeSpace.from_dict({"gender": ["female", "male"], "age": ["young", "old"]})
RATIO_BAR = 1.10  # guided / unguided at batch 64, both models
CELEBAHQ = dict(  # google/ddpm-celebahq-256's unet/config.json
    sample_size=256, in_channels=3, out_channels=3, layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
)  # fmt: skip
SD15 = dict(  # stable-diffusion-v1-5's unet/config.json
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
    block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
)  # fmt: skip
SMOKE = {  # the same code paths, scaled down
    "celebahq": dict(sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                     block_out_channels=(8, 16), norm_num_groups=4,
                     down_block_types=("AttnDownBlock2D", "DownBlock2D"),
                     up_block_types=("UpBlock2D", "AttnUpBlock2D")),
    "sd15": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                 cross_attention_dim=16, block_out_channels=(8, 16), norm_num_groups=4,
                 attention_head_dim=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D")),
}  # fmt: skip


def build(name: str, smoke: bool, device: str, dtype: torch.dtype, workdir: Path):
    """The backend for ``name`` with random weights, on ``device`` in ``dtype``."""
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel, UNet2DModel

    torch.manual_seed(0)
    config = SMOKE[name] if smoke else (CELEBAHQ if name == "celebahq" else SD15)
    if name == "celebahq":
        from fairsynth.diffusion.unconditional import DiffusionModel

        unet = UNet2DModel(**config).eval().requires_grad_(False).to(device, dtype)
        return DiffusionModel(unet, dict(DDPMScheduler(num_train_timesteps=1000).config))
    from diffusers import AutoencoderKL, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from fairsynth.diffusion.dummy import tiny_tokenizer
    from fairsynth.diffusion.text2image import PromptedModel, TextToImageModel

    unet = UNet2DConditionModel(**config)
    tokenizer = tiny_tokenizer(workdir / "tokenizer")
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, hidden_size=config["cross_attention_dim"],
        intermediate_size=64, num_attention_heads=4, num_hidden_layers=1,
        vocab_size=len(tokenizer), max_position_embeddings=77,
    ))  # fmt: skip
    vae = AutoencoderKL(block_out_channels=(32,), latent_channels=4, norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",),
                        up_block_types=("UpDecoderBlock2D",))  # fmt: skip
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)  # fmt: skip
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).to(device, dtype)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.unet, pipe.vae, pipe.text_encoder):
        m.eval().requires_grad_(False)
    return PromptedModel(
        TextToImageModel(pipe, family_of("StableDiffusionPipeline")),
        "a photo of the face of a doctor",
        None,
        7.5,
    )


def random_adp(backend, device: str) -> TrainedADP:
    with HSpace(backend.unet, "mid_block") as hsp:
        sample(backend, 1, batch_generator(0, 0), SamplerSettings(steps=1))
        c, s = int(hsp.captured.shape[1]), int(hsp.captured.shape[-1])
    torch.manual_seed(1)
    model = ADP(c, s, {n: len(k) for n, k in SPACE.attributes}).eval().requires_grad_(False)
    return TrainedADP(model, SPACE, {}).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_batches(backend, guidance_for, n: int, steps: int, reps: int, device: str) -> float:
    """Seconds per batch, mean of ``reps`` after one warm-up batch (same seeds per mode)."""
    settings = SamplerSettings(steps=steps, eta=1.0)
    for rep in range(reps + 1):
        if rep == 1:
            sync(device)
            t0 = time.perf_counter()
        sample(backend, n, batch_generator(7, rep), settings, guidance=guidance_for())
    sync(device)
    return (time.perf_counter() - t0) / reps


def top_operators(backend, guidance_for, n: int, steps: int, device: str, k: int = 12) -> list:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        sample(backend, n, batch_generator(9, 0), SamplerSettings(steps=steps, eta=1.0),
               guidance=guidance_for())  # fmt: skip
        sync(device)
    key = "device_time_total" if device.startswith("cuda") else "cpu_time_total"
    rows = sorted(prof.key_averages(), key=lambda e: getattr(e, key, 0.0), reverse=True)[:k]
    return [{"op": e.key, "ms": round(getattr(e, key, 0.0) / 1000, 3), "calls": e.count}
            for e in rows]  # fmt: skip


def run(a) -> dict:
    device = resolve_device(a.device)
    results, skipped, profiles = [], [], {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models:
            for dtype_name in a.dtypes:
                for compiled in a.compile:
                    backend = build(name, a.smoke, device, torch_dtype(dtype_name), Path(tmp))
                    if compiled == "on":
                        compile_around(backend.unet, "mid_block")
                    adp = random_adp(backend, device)
                    target = np.full(SPACE.n_cells, 1 / SPACE.n_cells)
                    config = GuidanceConfig(strength=100.0, max_step=0.5, loss="chi2", shift=0.0)

                    def guided(adp=adp, target=target, config=config):
                        return DistributionGuidance(adp, SPACE.names, target, config)

                    for n in a.batches:
                        if time.perf_counter() - t_start > a.budget_s:
                            skipped.append(f"{name} {dtype_name} compile {compiled} batch {n}")
                            continue
                        row = measure(backend, guided, name, dtype_name, compiled, n, a, device)
                        results.append(row)
                        print(format_row(row), flush=True)
                    if name not in profiles and time.perf_counter() - t_start < a.budget_s:
                        n = a.batches[len(a.batches) // 2]
                        profiles[name] = {"dtype": dtype_name, "compile": compiled, "batch": n,
                                          "top": top_operators(backend, guided, n, 2, device)}  # fmt: skip
                    del backend, adp
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
    bars = ratio_bars(results, a.batches)
    return {"device": device_name(device), "steps": a.steps, "reps": a.reps, "smoke": a.smoke,
            "results": results, "skipped": skipped, "profiles": profiles, "bars": bars,
            "seconds": round(time.perf_counter() - t_start, 1)}  # fmt: skip


def measure(backend, guided, name, dtype_name, compiled, n, a, device) -> dict:
    row = {"model": name, "dtype": dtype_name, "compile": compiled, "batch": n}
    for mode, guidance_for in (("unguided", lambda: None), ("guided", guided)):
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(device)
        try:
            seconds = time_batches(backend, guidance_for, n, a.steps, a.reps, device)
        except torch.OutOfMemoryError:
            row[mode] = {"error": "out of memory"}
            torch.cuda.empty_cache()
            continue
        peak = (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.startswith("cuda") else None
        )
        row[mode] = {"seconds_per_batch": round(seconds, 4),
                     "images_per_s": round(n / seconds, 2),
                     "peak_gib": None if peak is None else round(peak, 2)}  # fmt: skip
    if "seconds_per_batch" in row["unguided"] and "seconds_per_batch" in row["guided"]:
        row["ratio"] = round(row["guided"]["seconds_per_batch"]
                             / row["unguided"]["seconds_per_batch"], 3)  # fmt: skip
    return row


def ratio_bars(results: list[dict], batches: list[int]) -> list[dict]:
    """guided / unguided <= 1.10 at batch 64 (or the middle batch size) for each model."""
    at = 64 if 64 in batches else batches[len(batches) // 2]
    bars = []
    for row in results:
        if row["batch"] == at and "ratio" in row:
            bars.append({"what": f"{row['model']} {row['dtype']} compile {row['compile']} "
                                 f"batch {at}: guided / unguided", "value": row["ratio"],
                         "bar": RATIO_BAR, "ok": bool(row["ratio"] <= RATIO_BAR)})  # fmt: skip
    return bars


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def format_row(row: dict) -> str:
    def cell(mode):
        r = row.get(mode, {})
        if "error" in r:
            return r["error"]
        mem = "" if r.get("peak_gib") is None else f", {r['peak_gib']} GiB"
        return f"{r['images_per_s']} img/s{mem}"

    return (f"{row['model']:8s} {row['dtype']:8s} compile {row['compile']:3s} batch "
            f"{row['batch']:4d}: unguided {cell('unguided')}; guided {cell('guided')}; "
            f"ratio {row.get('ratio', '-')}")  # fmt: skip


def markdown(result: dict) -> str:
    lines = [f"Device: {result['device']}; {result['steps']} DDIM steps (eta 1), "
             f"{result['reps']} timed batches after a warm-up; {result['seconds']} s in all.", "",
             "| model | dtype | compile | batch | unguided img/s | guided img/s | ratio | "
             "peak GiB (unguided / guided) |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["results"]:
        u, g = r.get("unguided", {}), r.get("guided", {})
        lines.append(f"| {r['model']} | {r['dtype']} | {r['compile']} | {r['batch']} | "
                     f"{u.get('images_per_s', u.get('error'))} | "
                     f"{g.get('images_per_s', g.get('error'))} | {r.get('ratio', '-')} | "
                     f"{u.get('peak_gib')} / {g.get('peak_gib')} |")  # fmt: skip
    if result["skipped"]:
        lines += ["", f"Skipped (over --budget-s): {', '.join(result['skipped'])}."]
    for name, p in result["profiles"].items():
        lines += [
            "",
            f"Top operators, {name} ({p['dtype']}, compile {p['compile']}, batch "
            f"{p['batch']}, guided, 2 steps):",
            "",
            "| op | ms | calls |",
            "|---|---|---|",
        ]
        lines += [f"| `{t['op']}` | {t['ms']} | {t['calls']} |" for t in p["top"]]
    lines += ["", "Bars:"] + [f"- {'ok' if b['ok'] else 'MISS'} {b['what']}: {b['value']} "
                              f"(bar <= {b['bar']})" for b in result["bars"]]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for gpu.json and gpu.md")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--smoke", action="store_true", help="tiny models, tiny batches: seconds")
    ap.add_argument("--models", nargs="+", default=["celebahq", "sd15"], choices=list(SMOKE))
    ap.add_argument("--batches", type=int, nargs="+", default=None)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--compile", nargs="+", default=None, choices=["off", "on"])
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip what would start later")
    a = ap.parse_args(argv)
    a.batches = a.batches or ([2, 4] if a.smoke else [16, 64, 128])
    a.compile = a.compile or (["off"] if a.smoke else ["off", "on"])
    a.steps = a.steps or (2 if a.smoke else 10)
    a.reps = a.reps or (1 if a.smoke else 2)
    result = run(a)
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "gpu.json").write_text(json.dumps(result, indent=2))
    (a.out / "gpu.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
