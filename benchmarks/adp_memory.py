"""Benchmark: peak resident memory of ADP training at two numbers of trajectories, recorded
in memory (``record_trajectories``) vs streamed to a store on disk (``stream_trajectories``,
what ``fairsynth train-adp`` does).

    python benchmarks/adp_memory.py [--sizes 2048 8192] [--out benchmarks/results/adp_memory.json]

Each run is a fresh process (peak RSS from ``getrusage``) on a tiny random UNet whose h is
64x8x8 (8 KiB a row in float16), 10 steps all recorded: 80 KiB of h per trajectory. Streamed,
the peak must not grow with the number of trajectories; in memory it grows by about that.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path


def child(mode: str, n: int) -> None:
    import numpy as np
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    from fairsynth.core.attributes import AttributeSpace
    from fairsynth.diffusion.sampling import SamplerSettings
    from fairsynth.diffusion.unconditional import DiffusionModel
    from fairsynth.guidance.training import ADPTraining, train_adp
    from fairsynth.guidance.trajectories import (
        Recording,
        Trajectories,
        record_trajectories,
        stream_trajectories,
    )
    from fairsynth.guidance.trajectory_store import TrajectoryWriter

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()  # fmt: skip
    model = DiffusionModel(unet, dict(DDPMScheduler(num_train_timesteps=1000).config))
    space = AttributeSpace.from_dict({"skin": ["light", "dark"]})

    def labeller(images):
        return {"skin": np.eye(2)[(images.mean(axis=(1, 2, 3)) > 127).astype(int)]}

    kw = dict(n=n, seed=0, recording=Recording(SamplerSettings(steps=10), 1, 64))
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "memory":
            traj = record_trajectories(model, labeller, **kw)
        else:
            writer = TrajectoryWriter(Path(tmp) / "store")
            stream_trajectories(writer, model, labeller, **kw)
            writer.finish()
            traj = Trajectories.open(writer.folder)
        train_adp(traj, space, ADPTraining(epochs=2, batch_size=256, width=16, hidden=32))
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs=2, default=[2048, 8192])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/adp_memory.json"))
    ap.add_argument("--child", nargs=2, metavar=("MODE", "N"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        child(a.child[0], int(a.child[1]))
        return 0
    rows = []
    for mode in ("streamed", "memory"):
        for n in a.sizes:
            run = subprocess.run([sys.executable, __file__, "--child", mode, str(n)],
                                 capture_output=True, text=True, check=True)  # fmt: skip
            peak = json.loads(run.stdout.strip().splitlines()[-1])["peak_rss_mib"]
            rows.append({"mode": mode, "trajectories": n, "peak_rss_mib": round(peak, 1),
                         "h_mib": round(n * 10 * 64 * 8 * 8 * 2 / 2**20, 1)})  # fmt: skip
            print(f"{mode:9s} {n:6d} trajectories (h {rows[-1]['h_mib']:7.1f} MiB): "
                  f"peak RSS {peak:8.1f} MiB", flush=True)  # fmt: skip
    growth = {
        m: [r["peak_rss_mib"] for r in rows if r["mode"] == m] for m in ("streamed", "memory")
    }
    result = {
        "rows": rows,
        "growth_mib": {m: round(v[1] - v[0], 1) for m, v in growth.items()},
        "ratio_large_to_small": {m: round(v[1] / v[0], 3) for m, v in growth.items()},
    }
    print(f"growth {a.sizes[0]} -> {a.sizes[1]}: streamed {result['growth_mib']['streamed']} MiB, "
          f"in memory {result['growth_mib']['memory']} MiB")  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
