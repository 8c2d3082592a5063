"""Benchmark: fill the same quotas with distribution guidance and with rejection sampling.

    python benchmarks/quota.py [--params params.yaml] [--n 512] [--out benchmarks/results/quota.json]

Both runs use the params' target, model, ADP and verifier, in this one process; rejection
sampling is guidance mode ``none`` (plain sampling + the verifier's acceptance). Reported for
each: samples generated per accepted sample, whether the quotas were met, seconds; and the ratio
guided / rejection.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from fairsynth.app.bench import Bar, add_bar_arguments, bars_json, check_bars, run_settings
from fairsynth.app.config import load_params, replace
from fairsynth.app.stages.generate import stage_generate

GUIDED_BAR, RATIO_BAR = 1.3, 0.5  # generated per accepted, guided; guided / rejection


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=None, help="standalone quota total (default: params)")
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quota.json"))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)
    params = load_params(a.params)
    gen = replace(
        params.generate,
        mode="standalone",
        n=a.n or params.generate.n,
        budget=a.budget or max(params.generate.budget, 40 * (a.n or params.generate.n)),
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("distribution", "none"):
            p = replace(
                params,
                generate=gen,
                guidance=replace(params.guidance, mode=mode),
                output=replace(params.output, dir=str(Path(tmp) / mode)),
            )
            s = stage_generate(p, None, progress=True)
            results[mode] = {k: s[k] for k in ("quotas", "accepted", "generated", "complete", "shortfall",
                                               "samples_per_accepted", "generation_seconds", "reasons")}  # fmt: skip
            print(f"{mode:<13} generated/accepted {s['samples_per_accepted']:.3f}  complete {s['complete']}  "
                  f"{s['generation_seconds']:.0f} s", flush=True)  # fmt: skip
    ratio = (
        results["distribution"]["samples_per_accepted"] / results["none"]["samples_per_accepted"]
    )
    g = params.guidance
    bars = [
        Bar("guided run complete", float(results["distribution"]["complete"]), "==", 1.0),
        Bar("rejection run complete", float(results["none"]["complete"]), "==", 1.0),
        Bar("generated per accepted, guided", results["distribution"]["samples_per_accepted"],
            "<=", GUIDED_BAR),
        Bar("guided / rejection", ratio, "<=", RATIO_BAR),
    ]  # fmt: skip
    out = {
        "n": gen.n, "cells": params.build_target().space.cell_names(), "runs": results,
        "guided_over_rejection": ratio, "bars": bars_json(bars),
        "settings": run_settings(
            strength=g.strength, max_step=g.max_step, loss=g.loss, window=g.window,
            batch_size=g.batch_size, steps=params.model.steps, eta=params.model.eta,
            scale_window=params.scale.window, min_batch=gen.min_batch, budget=gen.budget,
            seed=gen.seed, confidence=params.verify.confidence, adp=params.adp.path,
            target=params.build_target().probs.round(6).tolist(),
        ),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(f"\ngenerated per accepted: guided {results['distribution']['samples_per_accepted']:.3f}, "
          f"rejection {results['none']['samples_per_accepted']:.3f}, ratio {ratio:.3f}")  # fmt: skip
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    sys.exit(main())
