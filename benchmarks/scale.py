"""Benchmark: samples accepted per second on 1 and on 2 (or more) Dask workers.

    python benchmarks/scale.py [--params params.yaml] [--n 256] [--workers 1 2]
    python benchmarks/scale.py --address tcp://scheduler:8786 --workers 8   # an existing cluster
    python benchmarks/scale.py --workers 1 8 --resources GPU=1              # a local GPU cluster

Each run is the generation stage (``stage_generate``, as DVC and the flows run it) with the
params' target, model, ADP and verifier, ``scale.mode: dask`` and the given worker count (one
thread each); the same window and seeds, so every run produces the same dataset (checked:
the accepted keys must match). Reported per run: accepted per second over the generation
(workers loading their models included, cluster start-up excluded and printed apart), and the
speed-up of each run over the first. ``--local`` adds a run in this process for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from bars import Bar, add_bar_arguments, bars_json, check_bars, run_settings

from fairsynth.app.config import load_params, replace
from fairsynth.app.runspec import scale_spec
from fairsynth.app.stages.generate import stage_generate
from fairsynth.run.executors import DaskExecutor

SPEEDUP_BAR = 0.75  # per added worker: 2 workers >= 1.5x one


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=256, help="standalone quota total")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--window", type=int, default=None, help="default: params scale.window")
    ap.add_argument("--address", default=None, help="an existing Dask scheduler")
    ap.add_argument("--resources", default=None, help="per worker, e.g. GPU=1")
    ap.add_argument("--adp", default=None, help="ADP path (default: params, else the shipped one)")
    ap.add_argument("--local", action="store_true", help="also run in this process")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)
    params = load_params(a.params)
    adp_path = a.adp or (params.adp.path if Path(params.adp.path).exists() else "toyfaces")
    resources = None
    if a.resources:
        name, value = a.resources.split("=")
        resources = {name: float(value)}
    base = replace(
        params,
        adp=replace(params.adp, path=adp_path),
        generate=replace(
            params.generate, mode="standalone", n=a.n, budget=max(params.generate.budget, 8 * a.n)
        ),
    )
    runs = [("dask", w) for w in a.workers] + ([("local", 0)] if a.local else [])
    results, keys = [], None
    with tempfile.TemporaryDirectory() as tmp:
        for mode, workers in runs:
            scale = replace(
                base.scale, mode=mode, n_workers=max(workers, 1), threads_per_worker=1,
                address=a.address, resources=resources, window=a.window or base.scale.window,
            )  # fmt: skip
            out = Path(tmp) / f"{mode}-{workers}"
            p = replace(base, scale=scale, output=replace(base.output, dir=str(out)))
            t0 = time.perf_counter()
            executor = DaskExecutor(scale_spec(p)) if mode == "dask" else None
            if executor is not None and a.address:
                executor.client.wait_for_workers(workers)
            startup = time.perf_counter() - t0
            try:
                s = stage_generate(p, None, progress=False, executor=executor)
            finally:
                if executor is not None:
                    executor.close()
            frame = pd.read_parquet(out / "manifest.parquet")
            run_keys = list(frame.loc[frame["accepted"], "key"])
            same = keys is None or run_keys == keys
            keys = keys or run_keys
            accepted = int(sum(s["accepted"]))
            row = {
                "mode": mode,
                "workers": workers,
                "accepted": accepted,
                "generated": s["generated"],
                "seconds": s["wall_seconds"],
                "startup_seconds": round(startup, 2),
                "accepted_per_second": accepted / s["wall_seconds"],
                "complete": s["complete"],
                "same_keys_as_first": same,
            }
            results.append(row)
            print(f"{mode:<6}{workers:>3} worker(s): {accepted} accepted in {s['wall_seconds']:.1f} s "
                  f"= {row['accepted_per_second']:.2f}/s (start-up {startup:.1f} s), same keys: {same}",
                  flush=True)  # fmt: skip
    first = next(r for r in results if r["mode"] == "dask")
    for r in results:
        r["speedup_over_first_dask"] = r["accepted_per_second"] / first["accepted_per_second"]
    last = [r for r in results if r["mode"] == "dask"][-1]
    bars = [
        Bar(
            f"{r['mode']} x{r['workers']}: complete, same accepted keys as the first run",
            float(r["complete"] and r["same_keys_as_first"]),
            "==",
            1.0,
        )
        for r in results
    ]
    if last is not first:  # more workers must be faster (measured 1.79x for 2 vs 1)
        bars.append(Bar(f"speed-up {last['workers']} vs {first['workers']} workers",
                        last["speedup_over_first_dask"], ">=", SPEEDUP_BAR * (last["workers"]
                        / first["workers"])))  # fmt: skip
    g = base.guidance
    summary = {
        "n": a.n, "address": a.address, "runs": results, "bars": bars_json(bars),
        "settings": run_settings(
            window=a.window or base.scale.window, batch_size=g.batch_size, strength=g.strength,
            max_step=g.max_step, steps=base.model.steps, eta=base.model.eta,
            threads_per_worker=1, adp=base.adp.path,
        ),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(summary, indent=2))
    print(f"\nspeed-up {last['workers']} vs {first['workers']} worker(s): "
          f"{last['speedup_over_first_dask']:.2f}x  (written {a.out})")  # fmt: skip
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    sys.exit(main())
