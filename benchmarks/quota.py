"""Benchmark: fill the same quotas with distribution guidance and with rejection sampling.

    python benchmarks/quota.py [--params params.yaml] [--n 512] [--out benchmarks/results/quota.json]

Both runs use the params' target, model, ADP and verifier, in this one process; rejection
sampling is guidance mode ``none`` (plain sampling + the verifier's acceptance). Reported for
each: samples generated per accepted sample, whether the quotas were met, seconds; and the ratio
guided / rejection.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from fairsynth.config import load_params
from fairsynth.pipeline import stage_generate


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=None, help="standalone quota total (default: params)")
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quota.json"))
    a = ap.parse_args(argv)
    params = load_params(a.params)
    gen = dataclasses.replace(
        params.generate,
        mode="standalone",
        n=a.n or params.generate.n,
        budget=a.budget or max(params.generate.budget, 40 * (a.n or params.generate.n)),
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("distribution", "none"):
            p = dataclasses.replace(
                params,
                generate=gen,
                guidance=dataclasses.replace(params.guidance, mode=mode),
                output=dataclasses.replace(params.output, dir=str(Path(tmp) / mode)),
            )
            s = stage_generate(p, None, progress=True)
            results[mode] = {k: s[k] for k in ("quotas", "accepted", "generated", "complete", "shortfall",
                                               "samples_per_accepted", "generation_seconds", "reasons")}  # fmt: skip
            print(f"{mode:<13} generated/accepted {s['samples_per_accepted']:.3f}  complete {s['complete']}  "
                  f"{s['generation_seconds']:.0f} s", flush=True)  # fmt: skip
    ratio = (
        results["distribution"]["samples_per_accepted"] / results["none"]["samples_per_accepted"]
    )
    out = {"n": gen.n, "cells": params.build_target().space.cell_names(), "runs": results,
           "guided_over_rejection": ratio}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print(f"\ngenerated per accepted: guided {results['distribution']['samples_per_accepted']:.3f}, "
          f"rejection {results['none']['samples_per_accepted']:.3f}, ratio {ratio:.3f} "
          "(bars: guided <= 1.3, ratio <= 0.5)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
