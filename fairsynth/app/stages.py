"""The pipeline's stages as plain functions of the params: reference -> audit -> train_adp ->
generate -> report. DVC stages (``python -m fairsynth.app.stages STAGE``) and the Prefect tasks call
exactly these, so ``dvc repro`` and the flows never diverge. Stages pass paths, not tensors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.app.config import Params, load_params
from fairsynth.app.errors import USER_ERRORS
from fairsynth.app.errors import report as report_error
from fairsynth.app.weights import check_inputs, require_weights
from fairsynth.core.metrics import cell_counts, fairness_discrepancy, kl_divergence, total_variation
from fairsynth.data import shards
from fairsynth.data.plots import distribution_bars
from fairsynth.data.reference import (
    ReferenceData,
    audit,
    load_images,
    read_image_folder,
    read_shards,
    verifier_confusion,
)
from fairsynth.data.runlog import read_run_record, write_run_record
from fairsynth.run.executors import Executor, make_executor
from fairsynth.run.judge import GenerationState
from fairsynth.run.lock import OutputLock
from fairsynth.run.orchestrate import generate_dataset
from fairsynth.toyfaces.dataset import build_reference
from fairsynth.verify import load_one, load_verifier

AUDIT_DIR = Path("data/audit")
ADP_OUT = Path("data/adp")
REPORT_DIR = Path("data/report")


def stage_reference(params: Params) -> str:
    """Render the toy reference dataset (only for ``reference.source: toyfaces``)."""
    ref = params.reference
    if ref.source == "toyfaces":
        build_reference(ref.path, n=ref.n, seed=ref.seed)
    elif not Path(ref.path).exists():
        raise FileNotFoundError(f"reference.path {ref.path} does not exist")
    return ref.path


def load_reference(params: Params) -> ReferenceData:
    ref, space = params.reference, params.attribute_space()
    labeller = None
    if ref.labels is None:
        verifier = load_verifier(params.verify, params.attribute_space())

        def labeller(images: np.ndarray) -> dict[str, np.ndarray]:
            verdict = verifier.verify(images)
            bad = [r for r in verdict.rejects if r is not None]
            if bad:
                raise ValueError(
                    f"the verifier cannot label {len(bad)} reference image(s) ({sorted(set(bad))}); "
                    "give the reference a labels file (reference.labels)"
                )
            return verdict.probs

    if ref.source == "folder":
        return read_image_folder(ref.path, space, ref.labels, classifier=labeller)
    return read_shards(ref.path, space, classifier=labeller, labels_file=ref.labels)


def stage_audit(params: Params, out_dir: str | Path = AUDIT_DIR) -> dict:
    """Per-cell counts of the reference vs the target; JSON report and bar chart."""
    out_dir = Path(out_dir)
    target = params.build_target()
    data = load_reference(params)
    report = audit(data, target)
    if data.source != "classifier" and params.verify.audit_n > 0:
        report["verifiers"] = audit_verifiers(params, data)
    shards.write_json(out_dir / "audit.json", report)
    distribution_bars(
        report["cells"],
        {"reference": report["fractions"], "target": report["target"]},
        out_dir / "reference_vs_target.png",
        f"Reference ({report['n']} samples) vs target — FD {report['fd']:.3f}",
    )
    return report


def audit_verifiers(params: Params, data: ReferenceData) -> dict:
    """Each configured verifier against the reference's own labels (its first
    ``verify.audit_n`` samples): confusion matrices, per-class recall, rejections."""
    n = min(params.verify.audit_n, len(data.keys))
    keys = data.keys[:n]
    images = load_images(params.reference.source, params.reference.path, keys)
    labels = {k: np.asarray(v)[:n] for k, v in data.labels.items()}
    space = params.attribute_space()
    names = {"first": params.verify.verifier, "second": params.verify.second}
    out = {"n": n}
    for role, name in names.items():
        if name is None:
            continue
        verifier = load_one(name, params.verify, space)
        try:
            out[role] = {"verifier": name, **verifier_confusion(verifier, images, labels, space)}
        finally:
            verifier.close()
    return out


def stage_train_adp(params: Params, out: str | Path = ADP_OUT, progress: bool = False) -> str:
    from fairsynth.app.train_adp import train_adp_from_params

    t0 = time.time()
    train_adp_from_params(params, out, progress=progress)
    write_run_record(out, {"seconds": round(time.time() - t0, 1)})
    return str(out)


def stage_generate(
    params: Params,
    audit_report: dict | None = None,
    adp_path: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[GenerationState], None] | None = None,
    executor: Executor | None = None,
) -> dict:
    """Quota-driven guided generation, verification, and publication of shards + manifest.

    Batches are produced where ``scale`` says (this process or Dask workers; ``executor``
    overrides it, as the Prefect flow does with its task runner) and judged here. Crash-safe:
    every finished batch goes to the ledger first (``fairsynth.run.ledger``); a run started again
    with the same params replays it and continues. One writer per output.
    """
    if adp_path is not None:
        params = dataclasses.replace(
            params, adp=dataclasses.replace(params.adp, path=str(adp_path))
        )
    require_weights(params)  # before anything is loaded or generated: the whole list at once
    check_inputs(params)  # class names and step count against what the folders say
    with OutputLock(params.output.dir):
        own = executor is None
        executor = executor or make_executor(params)
        try:
            return generate_dataset(params, audit_report, executor, progress, on_batch)
        finally:
            if own:
                executor.close()


def stage_report(
    params: Params, audit_report: dict | None, report_dir: str | Path = REPORT_DIR
) -> dict:
    """metrics.json (DVC metrics) and the before/after plot, from the published manifest."""
    out = Path(params.output.dir)
    report_dir = Path(report_dir)
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
    }
    shards.write_json(report_dir / "metrics.json", metrics)
    run = read_run_record(out)  # the generation's timings: not in the byte-stable outputs
    write_run_record(
        report_dir, {k: run[k] for k in ("wall_seconds", "generation_seconds") if k in run}
    )
    series = {"target": target.probs.tolist(), "after": after.tolist()}
    if audit_report:
        series = {"reference (before)": before.tolist(), **series}
    distribution_bars(names, series, report_dir / "distribution.png",
                      f"Before vs after — FD {metrics['fd_after']:.3f}")  # fmt: skip
    pd.DataFrame({"cell": names, "target": target.probs, "before": before, "after": after}).to_csv(
        report_dir / "distribution.csv", index=False
    )
    return metrics


def _soft_distribution(acc: pd.DataFrame, space) -> np.ndarray:
    if not len(acc):
        return np.zeros(space.n_cells)
    joint = None
    for n in space.names:
        p = np.stack(acc[f"p_{n}"].to_numpy())
        joint = p if joint is None else (joint[:, :, None] * p[:, None, :]).reshape(len(p), -1)
    return joint.mean(0)


def reference_counts(params: Params) -> np.ndarray:
    data = load_reference(params)
    space = params.build_target().space
    return cell_counts(space.cell_index({n: data.labels[n] for n in space.names}), space.n_cells)


def format_metrics(m: dict) -> str:
    lines = [
        f"Balanced dataset ({m['mode']}, guidance {m['guidance_mode']}): "
        f"FD before {m['fd_before'] if m['fd_before'] is None else round(m['fd_before'], 4)}, "
        f"after {m['fd_after']:.4f}; quotas met: {m['quotas_met']}",
        f"{'cell':<24}{'target':>8}{'quota':>7}{'accepted':>10}",
    ]
    for c, t, q, a in zip(m["cells"], m["target"], m["quotas"], m["counts_synthetic"], strict=True):
        lines.append(f"{c:<24}{t:>8.3f}{q:>7}{a:>10}")
    lines.append(
        f"{m['samples_generated']} generated, {m['samples_accepted']} accepted "
        f"({m['samples_per_accepted']:.2f} generated per accepted); rejections {m['rejections']}"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fairsynth.app.stages", description="run one pipeline stage"
    )
    ap.add_argument(
        "stage", choices=["reference", "audit", "train_adp", "generate", "report", "show"]
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = ap.parse_args(argv)
    try:
        return _run_stage(a)
    except USER_ERRORS as exc:
        return report_error(exc)


def _run_stage(a: argparse.Namespace) -> int:
    params = load_params(a.params)  # validated before any work starts
    if a.stage == "show":
        print(format_metrics(json.loads((REPORT_DIR / "metrics.json").read_text())))
        return 0
    audit_path = AUDIT_DIR / "audit.json"
    audit_report = json.loads(audit_path.read_text()) if audit_path.is_file() else None
    if a.stage == "reference":
        print(stage_reference(params))
    elif a.stage == "audit":
        r = stage_audit(params)
        print(f"reference: {r['n']} samples, FD to target {r['fd']:.3f}")
    elif a.stage == "train_adp":
        stage_train_adp(params, progress=True)
    elif a.stage == "generate":
        s = stage_generate(params, audit_report, adp_path=None)
        print(
            json.dumps(
                {k: s[k] for k in ("accepted", "quotas", "generated", "complete", "shortfall")}
            )
        )
    else:
        m = stage_report(params, audit_report)
        print(
            json.dumps(
                {k: m[k] for k in ("fd_before", "fd_after", "quotas_met", "samples_per_accepted")}
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
