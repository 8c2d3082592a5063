"""Benchmark: seconds per image of each sampler against DDIM at 50 steps, in one process.

    python benchmarks/samplers.py [--batches 3] [--batch-size 64]
                                  [--out benchmarks/results/samplers.json]

Per sampler (scheduler, steps): unguided and distribution-guided (toward skin 50/50, the ADP's
recommended strength) seconds per image on the shipped toy model, each the mean over
``--batches`` batches after one warm-up batch, and the ratio to DDIM at 50 steps. Quality and
bars per sampler come from ``benchmarks/guidance.py --scheduler NAME --steps N``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bars import run_settings

from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.diffusion.sampling import SamplerSettings
from fairsynth.diffusion.unconditional import load_diffusion_model
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.config import GuidanceConfig
from fairsynth.guidance.guided import GuidedSampler
from fairsynth.toyfaces import ADP_DIR, DDPM_DIR
from fairsynth.toyfaces.render import ATTRIBUTES

SAMPLERS = (("ddim", 50), ("dpmsolver++-sde", 20), ("dpmsolver++", 20), ("euler_ancestral", 30),
            ("unipc", 20))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/samplers.json"))
    a = ap.parse_args(argv)

    model = load_diffusion_model(DDPM_DIR)
    adp = TrainedADP.load(ADP_DIR)
    strength = adp.meta["recommended"]["distribution_strength"]
    target = Target.from_marginals(AttributeSpace.from_dict(ATTRIBUTES), {"skin": [0.5, 0.5]})
    n = (a.batches + 1) * a.batch_size
    rows = []
    for scheduler, steps in SAMPLERS:
        settings = SamplerSettings(steps=steps, eta=1.0, layer=adp.meta.get("layer", "mid_block"),
                                   scheduler=scheduler)  # fmt: skip
        row = {"scheduler": scheduler, "steps": steps}
        for mode in ("none", "distribution"):
            config = GuidanceConfig(
                mode=mode, strength=strength if mode != "none" else 0.0, loss="chi2", shift=0.0
            )
            sampler = GuidedSampler(model, settings, config, adp)
            _, secs = sampler.batches(n, 0, a.batch_size, target)
            row[f"{mode}_sec_per_image"] = float(np.mean(secs[1:])) / a.batch_size
        rows.append(row)
    base = rows[0]
    for r in rows:
        for mode in ("none", "distribution"):
            r[f"{mode}_ratio_to_ddim50"] = (
                r[f"{mode}_sec_per_image"] / base[f"{mode}_sec_per_image"]
            )
        print(f"{r['scheduler']:<16} {r['steps']:>3} steps: unguided "
              f"{r['none_sec_per_image']:.3f} s/image (x{r['none_ratio_to_ddim50']:.2f}), "
              f"guided {r['distribution_sec_per_image']:.3f} s/image "
              f"(x{r['distribution_ratio_to_ddim50']:.2f})", flush=True)  # fmt: skip
    result = {"rows": rows, "settings": run_settings(batches=a.batches, batch_size=a.batch_size,
                                                     strength=strength, date=time.ctime())}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
