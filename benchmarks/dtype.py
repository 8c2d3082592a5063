"""Benchmark: the pipeline in bfloat16 against float32, end to end on the toy world.

    python benchmarks/dtype.py [--params params.yaml] [--n 256] [--dtypes float32 bfloat16]

Each run is the generation stage (``stage_generate``, as ``dvc repro`` runs it) with the params'
model, ADP, verifier and target, ``model.dtype`` set, ``generate.n`` samples and its own output
folder. Reported per dtype: quotas met, generated per accepted, the confident fraction of all
generated samples (verifier confidence >= ``verify.confidence``), FD of the accepted set to the
target, and seconds. Bar: bfloat16's confident fraction within 0.02 of float32's.
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
from fairsynth.app.stages.generate import stage_generate

CONFIDENT_BAR = 0.02  # |confident fraction (bfloat16) - (float32)|


def run_one(params, dtype: str, n: int, out: Path) -> dict:
    p = replace(params, model=replace(params.model, dtype=dtype),
                generate=replace(params.generate, n=n),
                output=replace(params.output, dir=str(out)))  # fmt: skip
    t0 = time.perf_counter()
    summary = stage_generate(p, None, progress=False)
    seconds = time.perf_counter() - t0
    frame = pd.read_parquet(out / "manifest.parquet")
    confident = float((frame["confidence"] >= params.verify.confidence).mean())
    return {
        "dtype": dtype,
        "complete": bool(summary["complete"]),
        "quotas_met": summary["accepted"] == summary["quotas"],
        "generated": int(len(frame)),
        "accepted": int(frame["accepted"].sum()),
        "generated_per_accepted": round(len(frame) / max(1, int(frame["accepted"].sum())), 3),
        "confident_fraction": round(confident, 4),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--n", type=int, default=256, help="standalone quota total per run")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/dtype.json"))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)
    params = load_params(a.params)
    if (
        params.guidance.mode != "none"
        and params.adp.path == "data/adp"
        and not Path("data/adp/adp.json").is_file()
    ):
        params = replace(params, adp=replace(params.adp, path="toyfaces"))  # the shipped ADP
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in a.dtypes:
            rows.append(run_one(params, dtype, a.n, Path(tmp) / dtype))
            print(json.dumps(rows[-1]), flush=True)
    by = {r["dtype"]: r for r in rows}
    bars = []
    if "float32" in by and "bfloat16" in by:
        diff = abs(by["bfloat16"]["confident_fraction"] - by["float32"]["confident_fraction"])
        bars = [
            Bar("bfloat16 quotas met", float(by["bfloat16"]["quotas_met"]), "==", 1.0),
            Bar("confident fraction |bfloat16 - float32|", diff, "<=", CONFIDENT_BAR),
        ]
    result = {"settings": run_settings(params=a.params, n=a.n), "rows": rows,
              "bars": bars_json(bars)}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    sys.exit(main())
