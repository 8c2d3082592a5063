"""Benchmark: guided / unguided time per batch, the modes alternated batch by batch so that
drift in the machine's speed falls on all of them alike (a block of one mode, then a block of
the next, minutes apart, is what the quality benchmarks time).

    python benchmarks/overhead.py --world text2image --reps 8
    python benchmarks/overhead.py --world unconditional --steps 25 --loss ot --protect
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
from fairsynth.diffusion.unconditional import load_diffusion_model
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.config import LOSSES, GuidanceConfig
from fairsynth.guidance.guided import GuidedSampler
from fairsynth.toyfaces.render import ATTRIBUTES

SPACE = AttributeSpace.from_dict(ATTRIBUTES)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="text2image", choices=("text2image", "unconditional"))
    ap.add_argument("--prompt", default="a photo of a teacher", help="text2image")
    ap.add_argument("--steps", type=int, default=None, help="default: the ADP's")
    ap.add_argument("--reps", type=int, default=8, help="batches per mode, alternated")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--strength", type=float, default=None, help="default: the ADP's")
    ap.add_argument("--loss", default="chi2", choices=LOSSES)
    ap.add_argument("--protect", action="store_true")
    ap.add_argument("--shift", type=float, default=1.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/overhead.json"))
    a = ap.parse_args(argv)

    t2i = a.world == "text2image"
    adp = TrainedADP.load(resolve("adp", "toyfaces-t2i" if t2i else "toyfaces")).aligned(SPACE)
    meta = adp.meta
    strength = a.strength or float(meta["recommended"]["distribution_strength"])
    if t2i:
        base = load_text2image(Path(resolve("model", "toyfaces-t2i")))
        backend = PromptedModel(base, a.prompt, None, float(meta.get("cfg_scale", 1.0)))
    else:
        backend = load_diffusion_model(str(resolve("model", "toyfaces")))
    settings = SamplerSettings(steps=a.steps or int(meta["steps"]), eta=float(meta["eta"]),
                               layer=str(meta["layer"]))  # fmt: skip
    target = Target.from_marginals(SPACE, {"skin": [0.3, 0.7], "eyeglasses": [0.6, 0.4]})
    guided = dict(strength=strength, loss=a.loss, protect=a.protect)
    modes = {
        "none": GuidanceConfig(mode="none"),
        "gradient": GuidanceConfig(**guided, shift=0.0),
        "gradient + shift": GuidanceConfig(**guided, shift=a.shift),
    }
    GuidedSampler(backend, settings, modes["gradient + shift"], adp).batches(
        a.batch_size, 0, a.batch_size, target
    )  # warm-up
    seconds = {m: [] for m in modes}
    for rep in range(a.reps):
        for m, config in modes.items():
            sampler = GuidedSampler(backend, settings, config, adp)
            _, sec = sampler.batches(a.batch_size, 1000 + rep, a.batch_size, target)
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
    a.out.write_text(json.dumps({"world": a.world, "steps": settings.steps, "strength": strength,
                                 "loss": a.loss, "protect": a.protect, "shift": a.shift,
                                 "batch_size": a.batch_size, "modes": result}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
