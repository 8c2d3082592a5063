"""Benchmark: guided / unguided time per batch on the toy text-to-image model, the modes
alternated batch by batch so that drift in the machine's speed falls on all of them alike.

    python benchmarks/text2image_overhead.py --reps 8
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.core.plugins import resolve
from fairsynth.diffusion.sampling import SamplerSettings
from fairsynth.diffusion.text2image import PromptedModel, load_text2image
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.guidance.guided import generate_batches
from fairsynth.toyfaces.render import ATTRIBUTES

SPACE = AttributeSpace.from_dict(ATTRIBUTES)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompt", default="a photo of a teacher")
    ap.add_argument("--reps", type=int, default=8, help="batches per mode, alternated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--strength", type=float, default=None, help="default: the ADP's")
    ap.add_argument("--shift", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/text2image_overhead.json"))
    a = ap.parse_args(argv)

    adp = TrainedADP.load(resolve("adp", "toyfaces-t2i")).aligned(SPACE)
    meta = adp.meta
    strength = a.strength or float(meta["recommended"]["distribution_strength"])
    base = load_text2image(Path(resolve("model", "toyfaces-t2i")))
    backend = PromptedModel(base, a.prompt, None, float(meta.get("cfg_scale", 1.0)))
    settings = SamplerSettings(steps=int(meta["steps"]), eta=float(meta["eta"]),
                               layer=str(meta["layer"]))  # fmt: skip
    target = Target.from_marginals(SPACE, {"skin": [0.3, 0.7], "eyeglasses": [0.6, 0.4]})
    modes = {
        "none": GuidanceConfig(mode="none"),
        "gradient": GuidanceConfig(strength=strength),
        "gradient + shift": GuidanceConfig(strength=strength, shift=a.shift),
    }
    generate_batches(backend, settings, a.batch_size, 0, a.batch_size, target,
                     modes["gradient + shift"], adp)  # warm-up  # fmt: skip
    seconds = {m: [] for m in modes}
    for rep in range(a.reps):
        for m, config in modes.items():
            _, sec = generate_batches(backend, settings, a.batch_size, 1000 + rep, a.batch_size,
                                      target, config, adp)  # fmt: skip
            seconds[m].append(float(sec[0]))
    base_s = float(np.median(seconds["none"]))
    result = {m: {"seconds": s, "median": float(np.median(s)),
                  "ratio": float(np.median(s)) / base_s} for m, s in seconds.items()}  # fmt: skip
    for m, r in result.items():
        print(
            f"{m:18} median {r['median']:.3f} s per batch of {a.batch_size}  "
            f"guided / unguided {r['ratio']:.3f}  (batches: "
            + " ".join(f"{x:.2f}" for x in r["seconds"])
            + ")"
        )
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"prompt": a.prompt, "strength": strength, "shift": a.shift,
                                 "batch_size": a.batch_size, "modes": result}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
