"""Benchmark: a growing reference topped up, not regenerated (augment mode).

    python benchmarks/topup.py [--n0 2000] [--added 2000] [--dark 0.4]
        [--out benchmarks/results/topup.json]

A reference of ``--n0`` toy renders (the shipped bias: 20 % dark skin) is balanced in augment
mode toward skin ``1 - dark`` / ``dark`` with the shipped toy DDPM and ADP; then ``--added``
renders of the same bias arrive as a new shard and the same params run again. Reported: what
the first run generated, what the top-up generated and added (against what a fresh run over
the grown reference would have to publish), whether every earlier shard is byte-identical,
and the union's FD to the target as the verifier and the reference labels count it (bar
<= 0.02).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bars import Bar, add_bar_arguments, bars_json, check_bars, run_settings

from fairsynth.app.config import load_params
from fairsynth.app.stages.audit import stage_audit
from fairsynth.app.stages.generate import stage_generate
from fairsynth.core.metrics import fairness_discrepancy
from fairsynth.toyfaces.dataset import build_reference

FD_BAR = 0.02


def add_reference_shard(folder: Path, n: int, seed: int, index: int) -> None:
    part = folder.parent / f"part-{seed}"
    build_reference(part, n=n, seed=seed, shard_size=n)
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(part / "reference-000000.tar", folder / f"reference-{index:06d}.tar")
    shutil.rmtree(part)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n0", type=int, default=2000)
    ap.add_argument("--added", type=int, default=2000)
    ap.add_argument("--dark", type=float, default=0.4, help="target fraction of dark skin")
    ap.add_argument("--work", type=Path, default=Path(".topup-bench"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/topup.json"))
    add_bar_arguments(ap)
    a = ap.parse_args(argv)

    shutil.rmtree(a.work, ignore_errors=True)
    ref, out = a.work / "reference", a.work / "shards"
    add_reference_shard(ref, a.n0, seed=1, index=0)
    params_file = a.work / "params.yaml"
    params_file.write_text(
        f"reference: {{source: shards, path: {ref}}}\n"
        f"target: {{marginals: {{skin: {{light: {1 - a.dark}, dark: {a.dark}}}}}}}\n"
        "adp: {path: toyfaces}\n"
        "verify: {audit_n: 0}\n"
        "generate: {mode: augment, budget: 20000}\n"
        f"output: {{dir: {out}, shard_size: 256}}\n"
    )
    params = load_params(params_file)

    def run() -> tuple[dict, dict, float]:
        t = time.perf_counter()
        audit = stage_audit(params, a.work / "audit")
        summary = stage_generate(params, audit, progress=True)
        return audit, summary, time.perf_counter() - t

    audit1, first, t1 = run()
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    add_reference_shard(ref, a.added, seed=2, index=1)
    audit2, second, t2 = run()
    after = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    kept = all(after.get(name) == data for name, data in before.items())
    frame = pd.read_parquet(out / "manifest.parquet")
    acc = frame[frame["accepted"]]
    synth = np.array([(acc["cell"] == c).sum() for c in audit2["cells"]])
    union = synth + np.asarray(audit2["counts"])
    target = np.array([1 - a.dark, a.dark])
    fd = fairness_discrepancy(union / union.sum(), target)
    changes = second.get("changes", {})
    row = {
        "reference": {"before": audit1["counts"], "after": audit2["counts"]},
        "first": {"quotas": first["quotas"], "generated": first["generated"], "seconds": round(t1, 1)},
        "top_up": {
            "added": changes.get("added"),
            "generated": changes.get("generated"),
            "fresh_run_quotas": changes.get("fresh_quotas"),
            "seconds": round(t2, 1),
            "version": second.get("version"),
        },
        "earlier_shards": len(before),
        "earlier_shards_identical": kept,
        "union_counts": union.tolist(),
        "union_fd": fd,
    }  # fmt: skip
    print(json.dumps(row, indent=2))
    bars = [
        Bar("top-up is version 2 of the same output", second.get("version", 0), "==", 2),
        Bar("earlier shards byte-identical", int(kept), "==", 1),
        Bar("added = fresh quotas - published", int(np.array_equal(
            np.asarray(changes.get("added")),
            np.asarray(changes.get("fresh_quotas")) - np.asarray(first["accepted"]))), "==", 1),
        Bar("union FD to target", fd, "<=", FD_BAR),
    ]  # fmt: skip
    result = {**row, "bars": bars_json(bars),
              "settings": run_settings(n0=a.n0, added=a.added, dark=a.dark)}  # fmt: skip
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    return check_bars(bars, a.report_only)


if __name__ == "__main__":
    sys.exit(main())
