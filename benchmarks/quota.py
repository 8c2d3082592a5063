"""Benchmark: fill the same quotas with distribution guidance and with rejection sampling.

    python benchmarks/quota.py [--params params.yaml] [--n 512] [--out benchmarks/results/quota.json]
                               [--scenario NAME] [--modes distribution none] [--loss L] [--steps S]
                               [--protect]

Both runs use the params' target, model, ADP and verifier, in this one process; rejection
sampling is guidance mode ``none`` (plain sampling + the verifier's acceptance). Reported for
each: samples generated per accepted sample, whether the quotas were met, seconds; and the ratio
guided / rejection (when both modes run). ``--scenario`` takes the target of one of
``benchmarks/guidance.py``'s scenarios instead of the params' (the far targets of issue 22).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bars import Bar, add_bar_arguments, bars_json, check_bars, run_settings

from fairsynth.app.config import load_params, replace
from fairsynth.app.config.model_section import TargetConfig
from fairsynth.app.stages.generate import stage_generate

GUIDED_BAR, RATIO_BAR = 1.15, 0.5  # generated per accepted, guided (issue 22); guided / rejection


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=None, help="standalone quota total (default: params)")
    ap.add_argument("--budget", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/quota.json"))
    ap.add_argument("--scenario", default=None, help="a target of benchmarks/guidance.py")
    ap.add_argument("--modes", nargs="+", default=["distribution", "none"],
                    choices=["distribution", "none"])  # fmt: skip
    ap.add_argument("--loss", default=None, help="default: the params' guidance.loss")
    ap.add_argument("--steps", type=int, default=None, help="default: the params' model.steps")
    ap.add_argument("--protect", action="store_true", help="guidance.protect: true")
    ap.add_argument("--bar", type=float, default=GUIDED_BAR, help="generated per accepted, guided")
    add_bar_arguments(ap)
    a = ap.parse_args(argv)
    params = load_params(a.params)
    if a.scenario is not None:
        params = replace(params, target=scenario_target(a.scenario))
    if a.loss is not None:
        params = replace(params, guidance=replace(params.guidance, loss=a.loss))
    if a.protect:
        params = replace(params, guidance=replace(params.guidance, protect=True))
    if a.steps is not None:
        params = replace(params, model=replace(params.model, steps=a.steps))
    gen = replace(
        params.generate,
        mode="standalone",
        n=a.n or params.generate.n,
        budget=a.budget or max(params.generate.budget, 40 * (a.n or params.generate.n)),
    )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in a.modes:
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
    g = params.guidance
    bars, ratio = [], None
    if "distribution" in results:
        guided = results["distribution"]
        bars += [
            Bar("guided run complete", float(guided["complete"]), "==", 1.0),
            Bar("generated per accepted, guided", guided["samples_per_accepted"], "<=", a.bar),
        ]
    if "none" in results:
        bars.append(Bar("rejection run complete", float(results["none"]["complete"]), "==", 1.0))
    if len(results) == 2:
        ratio = (
            results["distribution"]["samples_per_accepted"]
            / results["none"]["samples_per_accepted"]
        )
        bars.append(Bar("guided / rejection", ratio, "<=", RATIO_BAR))
    out = {
        "n": gen.n, "scenario": a.scenario, "cells": params.build_target().space.cell_names(), "runs": results,
        "guided_over_rejection": ratio, "bars": bars_json(bars),
        "settings": run_settings(
            strength=g.strength, max_step=g.max_step, loss=g.loss, protect=g.protect, shift=g.shift, window=g.window,
            batch_size=g.batch_size, steps=params.model.steps, eta=params.model.eta,
            scale_window=params.scale.window, min_batch=gen.min_batch, budget=gen.budget,
            seed=gen.seed, confidence=params.verify.confidence, adp=params.adp.path,
            scheduler=params.model.scheduler,
            target=params.build_target().probs.round(6).tolist(),
        ),
    }  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(out, indent=2))
    print("\ngenerated per accepted: " + ", ".join(
        f"{m} {r['samples_per_accepted']:.3f}" for m, r in results.items()
    ) + (f", ratio {ratio:.3f}" if ratio is not None else ""))  # fmt: skip
    return check_bars(bars, a.report_only)


def scenario_target(name: str) -> TargetConfig:
    """A guidance-benchmark scenario's target in the params' cell form."""
    sys.path.insert(0, str(Path(__file__).parent))
    from guidance import SCENARIOS  # noqa: PLC0415 - the sibling benchmark's scenarios

    if name not in SCENARIOS:
        raise SystemExit(f"--scenario {name!r}: not one of {sorted(SCENARIOS)}")
    target = SCENARIOS[name][0]
    cells = dict(zip(target.space.cell_names(), target.probs.tolist(), strict=True))
    return TargetConfig(attributes=list(target.space.names), cells=cells)


if __name__ == "__main__":
    sys.exit(main())
