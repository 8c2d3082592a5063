"""Benchmark: seconds per image, distribution guidance vs unguided, text-to-image backend.

    python benchmarks/text2image.py                      # a tiny random SD pipeline built here
    python benchmarks/text2image.py --model stable-diffusion-v1-5/stable-diffusion-v1-5 \\
        --device cuda --steps 50 --batch-size 8 --adp data/sd15/adp   # the real model on a GPU

Both modes run in this one process, alternating, on the same seeds and prompt; the guided run
differentiates only the ADP (h-space update on the conditional half of the CFG batch). Without
``--adp`` a random ADP of the right shape is used: cost does not depend on its weights.
Prints seconds per image for each mode and the ratio guided / unguided (target <= 1.15).

``--quality [ARGS]`` runs ``benchmarks/text2image_debias.py`` instead: FD, confidence and
Fréchet per prompt and target on the trained toy text-to-image model.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bars import Bar, add_bar_arguments, bars_json, check_bars, run_settings

from fairsynth.core.attributes import AttributeSpace
from fairsynth.diffusion.hspace import HSpace
from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample
from fairsynth.diffusion.text2image import PromptedModel, load_text2image
from fairsynth.guidance.adp import ADP, TrainedADP
from fairsynth.guidance.guide import DistributionGuidance, GuidanceConfig

SPACE = AttributeSpace.from_dict({"gender": ["female", "male"]})


TIME_RATIO_BAR = 1.15  # guided / unguided seconds per image


def h_shape(model: PromptedModel, layer: str) -> tuple[int, int]:
    with HSpace(model.unet, layer) as hsp:
        sample(model, 1, batch_generator(0, 0), SamplerSettings(steps=1, layer=layer))
        return int(hsp.captured.shape[1]), int(hsp.captured.shape[-1])


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--quality" in argv:
        sys.path.insert(0, str(Path(__file__).parent))
        from text2image_debias import main as quality

        return quality([x for x in argv if x != "--quality"])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="SD folder or hub id (default: tiny, built here)")
    ap.add_argument("--adp", default=None)
    ap.add_argument("--prompt", default="a photo of the face of a doctor")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--batches", type=int, default=4, help="timed batches per mode")
    ap.add_argument("--cfg-scale", type=float, default=7.5)
    ap.add_argument("--strength", type=float, default=100.0)
    ap.add_argument("--layer", default="mid_block")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/text2image.json"))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        path = a.model
        if path is None:
            from fairsynth.diffusion.dummy import build_tiny_sd

            build_tiny_sd(Path(tmp))
            path = str(Path(tmp) / "sd")
        base = load_text2image(path, local_files_only=True, device=a.device)
        model = PromptedModel(base, a.prompt, None, a.cfg_scale)
        if a.adp:
            adp = TrainedADP.load(a.adp, a.device)
        else:
            channels, spatial = h_shape(model, a.layer)
            torch.manual_seed(0)
            adp = TrainedADP(ADP(channels, spatial, {"gender": 2}).eval(), SPACE, {}).to(a.device)
        names = adp.space.names[:1]
        target = np.full(len(adp.space.classes(names[0])), 1.0 / len(adp.space.classes(names[0])))
        config = GuidanceConfig(
            mode="distribution", strength=a.strength, max_step=0.2, loss="chi2", shift=0.0
        )

        def run(mode: str, b: int) -> float:
            guidance = None if mode == "none" else DistributionGuidance(adp, names, target, config)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            settings = SamplerSettings(steps=a.steps, layer=a.layer)
            sample(model, a.batch_size, batch_generator(0, b), settings, guidance=guidance)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - t0

        run("none", 10_000)  # warm-up (allocations, kernels)
        run("distribution", 10_001)
        times: dict[str, list[float]] = {"none": [], "distribution": []}
        for b in range(a.batches):
            for mode in ("none", "distribution") if b % 2 == 0 else ("distribution", "none"):
                times[mode].append(run(mode, b))
    per_image = {m: float(np.median(t)) / a.batch_size for m, t in times.items()}
    ratio = per_image["distribution"] / per_image["none"]
    bars = [Bar("guided / unguided seconds per image", ratio, "<=", TIME_RATIO_BAR)]
    result = {
        "model": a.model or "tiny random SD (built here)",
        "seconds_per_image": per_image,
        "batch_seconds": times,
        "guided_over_unguided": ratio,
        "bars": bars_json(bars),
        "settings": run_settings(
            device=a.device, steps=a.steps, batch_size=a.batch_size, batches=a.batches,
            cfg_scale=a.cfg_scale, strength=a.strength, max_step=config.max_step,
            layer=a.layer, prompt=a.prompt, adp=a.adp,
        ),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"seconds per image: unguided {per_image['none']:.4f}, "
          f"distribution guidance {per_image['distribution']:.4f}; "
          f"ratio {ratio:.3f} [{result['model']}, {a.device}]")  # fmt: skip
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    sys.exit(main())
