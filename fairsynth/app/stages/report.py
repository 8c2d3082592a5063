"""The report stage: metrics.json (DVC metrics), the before/after plot and table, and what the
published dataset says about itself (card, Croissant file, report page), from the manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.app.config import Params
from fairsynth.app.stages.common import read_audit, stage_main
from fairsynth.app.stages.publication import write_publication
from fairsynth.core.confusion import audit_matrices, estimate_truth
from fairsynth.core.metrics import fairness_discrepancy, kl_divergence, total_variation
from fairsynth.data import shards
from fairsynth.data.plots import distribution_bars
from fairsynth.data.runlog import read_run_record, run_record_path
from fairsynth.run.lock import OutputLock


def stage_report(
    params: Params, audit_report: dict | None, report_dir: str | Path | None = None
) -> dict:
    """metrics.json (DVC metrics) and the before/after plot, from the published manifest."""
    out = Path(params.output.dir)
    report_dir = Path(params.output.report_dir if report_dir is None else report_dir)
    target = params.build_target()
    space = target.space
    index = json.loads((out / "index.json").read_text())
    frame = pd.read_parquet(out / "manifest.parquet")
    acc = frame[frame["accepted"]]
    names = space.cell_names()
    synth_counts = np.array([(acc["cell"] == c).sum() for c in names])
    ref_counts = np.asarray(audit_report["counts"]) if audit_report else np.zeros(len(names), int)
    after_counts = synth_counts + (ref_counts if params.generate.mode == "augment" else 0)
    before = ref_counts / max(1, ref_counts.sum())
    after = after_counts / max(1, after_counts.sum())
    soft = _soft_distribution(acc, space)
    metrics = {
        "fd_before": fairness_discrepancy(before, target.probs) if audit_report else None,
        "fd_after": fairness_discrepancy(after, target.probs),
        "fd_after_soft": fairness_discrepancy(soft, target.probs) if len(acc) else None,
        "kl_target_to_after": kl_divergence(target.probs, after),
        "tv_after": total_variation(after, target.probs),
        "cells": names,
        "target": target.probs.round(6).tolist(),
        "counts_reference": ref_counts.tolist(),
        "counts_synthetic": synth_counts.tolist(),
        "quotas": index["quotas"],
        "quotas_met": bool((synth_counts == np.asarray(index["quotas"])).all()),
        "samples_generated": int(index["generated"]),
        "samples_accepted": int(len(acc)),
        "samples_per_accepted": index["samples_per_accepted"],
        "rejections": {
            k: int(v) for k, v in frame.loc[~frame["accepted"], "reason"].value_counts().items()
        },
        "verifier_disagreement_rate": float((~frame["verifiers_agree"].astype(bool)).mean())
        if "verifiers_agree" in frame and len(frame)
        else None,
        "mode": params.generate.mode,
        "guidance_mode": params.guidance.mode,
        "estimated_true": _estimated_true(
            frame, synth_counts, audit_report, space, target, params.generate.mode
        ),
    }
    with OutputLock(report_dir):
        shards.write_json(report_dir / "metrics.json", metrics)
        run = read_run_record(out)  # the generation's timings: not in the byte-stable outputs
        # the generation's own record, not a new timestamp: unchanged when the data is
        shards.write_json(run_record_path(report_dir), {k: run[k] for k in
                          ("wall_seconds", "generation_seconds", "finished_at") if k in run})  # fmt: skip
        fd_after, audited = metrics["fd_after"], bool(audit_report)
        _distribution_files(report_dir, names, target.probs, before, after, fd_after, audited)
        write_publication(params, audit_report, metrics, frame, report_dir, run)
    return metrics


def _distribution_files(report_dir: Path, names: list[str], target: np.ndarray,
                        before: np.ndarray, after: np.ndarray, fd_after: float,
                        audited: bool) -> None:  # fmt: skip
    """The before/after plot (the reference's bars where it was audited) and its numbers."""
    series = {"target": target.tolist(), "after": after.tolist()}
    if audited:
        series = {"reference (before)": before.tolist(), **series}
    distribution_bars(names, series, report_dir / "distribution.png",
                      f"Before vs after — FD {fd_after:.3f}")  # fmt: skip
    columns = {"cell": names, "target": target, "before": before, "after": after}
    csv = pd.DataFrame(columns).to_csv(index=False)
    shards.write_atomic(report_dir / "distribution.csv", csv.encode())


def _estimated_true(frame: pd.DataFrame, counts: np.ndarray, audit_report: dict | None, space,
                    target, mode: str) -> dict | None:  # fmt: skip
    """The published set's true cell distribution as estimated from the acceptance verifier's
    audit confusion (None without a labelled audit of every guided attribute). The quotas
    picked the set by verified cell among everything judged with confidence (accepted or
    cell_full): the posterior P(true | verified) comes from those."""
    audit = (audit_report or {}).get("verifiers", {}).get("first")
    matrices = audit_matrices(audit, space.names) if audit else None
    if matrices is None or not counts.sum():
        return None
    judged = frame[frame["reason"].isin(["accepted", "cell_full"])]
    generated = np.array([(judged["cell"] == c).sum() for c in space.cell_names()])
    try:
        # augment: the synthetic part alone is not meant to follow the target (no FD then)
        probs = target.probs if mode == "standalone" else None
        return estimate_truth(counts, matrices, probs, generated=generated)
    except ValueError as exc:  # e.g. a class the audit's labelled samples never showed
        return {"unavailable": str(exc)}


def _soft_distribution(acc: pd.DataFrame, space) -> np.ndarray:
    if not len(acc):
        return np.zeros(space.n_cells)
    joint = None
    for n in space.names:
        p = np.stack(acc[f"p_{n}"].to_numpy())
        joint = p if joint is None else (joint[:, :, None] * p[:, None, :]).reshape(len(p), -1)
    return joint.mean(0)


def format_metrics(m: dict) -> str:
    lines = [
        f"Balanced dataset ({m['mode']}, guidance {m['guidance_mode']}): "
        f"FD before {m['fd_before'] if m['fd_before'] is None else round(m['fd_before'], 4)}, "
        f"after {m['fd_after']:.4f}; quotas met: {m['quotas_met']}",
        f"{'cell':<24}{'target':>8}{'quota':>7}{'accepted':>10}",
    ]
    est = m.get("estimated_true")
    est = est if est and "probs" in est else None
    if est:
        lines[1] += f"{'est. true':>11}{'interval':>16}"
    for i, (c, t, q, a) in enumerate(
        zip(m["cells"], m["target"], m["quotas"], m["counts_synthetic"], strict=True)
    ):
        line = f"{c:<24}{t:>8.3f}{q:>7}{a:>10}"
        if est:
            line += f"{est['probs'][i]:>11.3f}   [{est['low'][i]:.3f}, {est['high'][i]:.3f}]"
        lines.append(line)
    if est and "fd_interval" in est:
        lo, hi = est["fd_interval"]
        lines.append(
            f"estimated true FD {est['fd']:.4f} ({est['level']:.0%} interval {lo:.4f}-{hi:.4f}), "
            "from the verifier's audit confusion"
        )
    lines.append(
        f"{m['samples_generated']} generated, {m['samples_accepted']} accepted "
        f"({m['samples_per_accepted']:.2f} generated per accepted); rejections {m['rejections']}"
    )
    return "\n".join(lines)


def format_prompts(index: dict) -> str:
    """A text-to-image run's index (``index.json``) per prompt: quotas against accepted."""
    lines = [f"Per prompt (CFG scale {index.get('cfg_scale')}), cells {index['cells']}:"]
    for p in index["prompts"]:
        met = p["accepted"] == p["quotas"]
        per = p["generated"] / max(1, sum(p["accepted"]))
        lines.append(
            f"  {p['prompt']!r}: quotas {p['quotas']}, accepted {p['accepted']} "
            f"({'met' if met else 'NOT met'}), {p['generated']} generated "
            f"({per:.2f} per accepted)"
        )
    lines.append(
        f"all prompts: {index['generated']} generated, {sum(index['accepted'])} accepted "
        f"({index['samples_per_accepted']:.2f} generated per accepted)"
    )
    return "\n".join(lines)


def _cli(params: Params) -> None:
    m = stage_report(params, read_audit(params))
    print(
        json.dumps(
            {k: m[k] for k in ("fd_before", "fd_after", "quotas_met", "samples_per_accepted")}
        )
    )


def main(argv: list[str] | None = None) -> int:
    return stage_main("report", _cli, argv)


if __name__ == "__main__":
    sys.exit(main())
