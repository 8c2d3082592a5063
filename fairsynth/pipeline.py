"""The pipeline's stages as plain functions of the params: reference -> audit -> train_adp ->
generate -> report. DVC stages (``python -m fairsynth.pipeline STAGE``) and the Prefect tasks call
exactly these, so ``dvc repro`` and the flows never diverge. Stages pass paths, not tensors.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth import shards, tario
from fairsynth.adp import TrainedADP
from fairsynth.backends import bind_prompt, load_model
from fairsynth.config import ConfigError, Params, load_params
from fairsynth.generate import (
    ACCEPTED,
    GenerationState,
    next_batch_size,
    run_batch,
    shortfall,
)
from fairsynth.grid import save_grid
from fairsynth.ledger import Ledger, OutputLock, fingerprint, ledger_dir
from fairsynth.metrics import cell_counts, fairness_discrepancy, kl_divergence, total_variation
from fairsynth.plan import plan_augment, plan_standalone
from fairsynth.plots import distribution_bars
from fairsynth.reference import (
    ReferenceData,
    audit,
    load_images,
    read_image_folder,
    read_shards,
    verifier_confusion,
)
from fairsynth.toyfaces import resolve
from fairsynth.toyfaces.dataset import build_reference
from fairsynth.verify import load_one, load_verifier
from fairsynth.weights import require_weights

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
        verifier = load_verifier(params.verify)

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
        verifier = load_one(name, params.verify)
        try:
            out[role] = {"verifier": name, **verifier_confusion(verifier, images, labels, space)}
        finally:
            verifier.close()
    return out


def stage_train_adp(params: Params, out: str | Path = ADP_OUT, progress: bool = False) -> str:
    from fairsynth.train_adp import train_adp_from_params

    train_adp_from_params(params, out, progress=progress)
    return str(out)


def guidance_hash(params: Params) -> str:
    blob = json.dumps(
        {
            "guidance": params.guidance.__dict__,
            "model": params.model.__dict__,
            "adp": params.adp.__dict__,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def plan_quotas(params: Params, audit_report: dict | None) -> np.ndarray:
    target = params.build_target()
    if params.generate.mode == "standalone":
        return plan_standalone(target.probs, params.generate.n)
    if audit_report is None:
        raise ValueError("generate.mode augment needs the reference audit (run the audit stage)")
    if audit_report["cells"] != target.space.cell_names():
        raise ValueError(
            "the audit was made for other cells than the target's; re-run the audit stage"
        )
    return plan_augment(target.probs, np.asarray(audit_report["counts"]))


def generation_fingerprint(params: Params, quotas: np.ndarray) -> dict:
    """Everything that decides which samples a run generates and accepts (not the budget)."""
    target = params.build_target()
    return {
        "quotas": quotas.tolist(),
        "target": target.probs.round(9).tolist(),
        "cells": target.space.cell_names(),
        "guidance": guidance_hash(params),
        "model_files": _files_signature(resolve("model", params.model.path)),
        "adp_files": _files_signature(resolve("adp", params.adp.path))
        if params.guidance.mode != "none"
        else None,
        "verify": dataclasses.asdict(params.verify),
        "verifier_files": _files_signature(resolve("verifier", params.verify.verifier))
        if params.verify.verifier != "deepface"
        else None,
        "seed": params.generate.seed,
        "dataset": params.generate.dataset,
        "min_batch": params.generate.min_batch,
    }


def _files_signature(path: str | Path) -> list | str:
    p = Path(path)
    if not p.exists():
        return str(path)  # a hub id: its name is all we know
    files = sorted(f for f in (p.rglob("*") if p.is_dir() else [p]) if f.is_file())
    return [[str(f.relative_to(p) if p.is_dir() else f.name), f.stat().st_size] for f in files]


def stage_generate(
    params: Params,
    audit_report: dict | None = None,
    adp_path: str | Path | None = None,
    progress: bool = True,
    on_batch: Callable[[GenerationState], None] | None = None,
) -> dict:
    """Quota-driven guided generation, verification, and publication of shards + manifest.

    Crash-safe: every finished batch goes to the ledger first (``fairsynth.ledger``); a run
    started again with the same params replays it and continues. One writer per output.
    """
    if adp_path is not None:
        params = dataclasses.replace(
            params, adp=dataclasses.replace(params.adp, path=str(adp_path))
        )
    require_weights(params)  # before anything is loaded or generated: the whole list at once
    with OutputLock(params.output.dir):
        verifier = load_verifier(params.verify)
        try:
            return _generate(params, audit_report, progress, on_batch, verifier)
        finally:
            verifier.close()


def plan_jobs(params: Params, audit_report: dict | None) -> list[tuple]:
    """(prompt or None, target, quotas) per generation job."""
    jobs = params.jobs()
    if params.model.kind != "text2image":
        prompt, target, _ = jobs[0]
        return [(prompt, target, plan_quotas(params, audit_report))]
    return [(p, t, plan_standalone(t.probs, n)) for p, t, n in jobs]


def _generate(params, audit_report, progress, on_batch, verifier) -> dict:
    t_start = time.time()
    out = Path(params.output.dir)
    space = params.build_target().space
    jobs = plan_jobs(params, audit_report)
    gen, g = params.generate, params.guidance
    base = load_model(params.model)
    models = [bind_prompt(base, prompt, params.model.cfg_scale) for prompt, _, _ in jobs]
    config = g.to_config()
    adp = None
    if config.mode != "none":
        adp = TrainedADP.load(resolve("adp", params.adp.path))
    (out / "index.json").unlink(missing_ok=True)  # until this run completes, it is not complete
    fp = generation_fingerprint(params, np.stack([q for _, _, q in jobs]))
    ledger = Ledger(ledger_dir(out, fingerprint(fp)), fp)
    states = [GenerationState(quotas=q.copy(), accepted=np.zeros_like(q)) for _, _, q in jobs]
    rows: list[dict] = []
    next_batch = 0
    for done in ledger.batches():
        job = int(done.rows[0].get("job", 0)) if done.rows else 0
        states[job].next_batch = done.batch
        states[job].replay(done.batch, done.rows, space.cell_names())
        rows.extend(done.rows)
        next_batch = done.batch + 1
    resumed = next_batch
    ghash = guidance_hash(params)
    total = int(sum(q.sum() for _, _, q in jobs))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="accepted", unit="sample")
        bar.update(int(sum(np.minimum(s.accepted, s.quotas).sum() for s in states)))
        if resumed:
            bar.write(f"resumed from the ledger at batch {resumed} ({ledger.path})")
    while True:
        open_jobs = [k for k, s in enumerate(states) if not s.done]
        generated = sum(s.generated for s in states)
        if not open_jobs or generated >= gen.budget:
            break
        # the job with the most samples missing goes next (deterministic, so resume-safe)
        j = max(
            open_jobs,
            key=lambda k: (int((states[k].quotas - states[k].accepted).clip(0).sum()), -k),
        )
        state = states[j]
        state.next_batch = next_batch
        size = next_batch_size(state, g.batch_size, gen.min_batch)
        res = run_batch(
            models[j], adp, verifier, space, config, state, gen.seed, size,
            params.model.steps, params.verify.confidence, params.model.eta, params.model.layer,
        )  # fmt: skip
        next_batch = state.next_batch
        provenance = getattr(models[j], "provenance", {})
        batch_rows, batch_samples = [], []
        for i in range(len(res.images)):
            key = shards.sample_key(gen.dataset, res.batch, i)
            cell = int(res.cells[i])
            classes = {n: space.classes(n)[int(res.probs[n][i].argmax())] for n in space.names}
            row = {
                "key": key,
                "batch": res.batch,
                "index": i,
                "job": j,
                "seed": gen.seed,
                "cell": space.cell_names()[cell],
                **classes,
                **{f"p_{n}": res.probs[n][i].round(6).tolist() for n in space.names},
                "confidence": round(float(res.confidence[i]), 6),
                "accepted": res.reasons[i] == ACCEPTED,
                "reason": res.reasons[i],
                "guidance_mode": config.mode,
                "guidance_hash": ghash,
                "model": str(params.model.path),
                "batch_target": res.target.round(6).tolist(),
                **provenance,
            }
            if res.second is not None:
                for n, p2 in res.second.items():
                    row[f"p2_{n}"] = p2[i].round(6).tolist()
                row["verifiers_agree"] = all(
                    int(p2[i].argmax()) == int(res.probs[n][i].argmax())
                    for n, p2 in res.second.items()
                )
            batch_rows.append(row)
            if row["accepted"]:
                meta = {
                    k: row[k] for k in ("key", "cell", "batch", "seed", "confidence", *space.names)
                }
                meta.update(provenance)
                batch_samples.append(
                    {"__key__": key, "png": res.images[i], "json": meta, "cls": cell}
                )
        ledger.append(res.batch, batch_rows, batch_samples)
        rows.extend(batch_rows)
        if bar is not None:
            bar.update(int(sum(r == ACCEPTED for r in res.reasons)))
            bar.set_postfix(generated=generated + len(res.images))
        if on_batch is not None:
            on_batch(state)
    if bar is not None:
        bar.close()

    summary = _publish(params, out, ledger, rows, states, jobs, space)
    summary["resumed_at_batch"] = resumed
    summary["verifier_crashes"] = list(getattr(verifier, "crashes", []))
    summary["wall_seconds"] = round(time.time() - t_start, 2)
    shards.write_json(out / "index.json", summary)  # written last: the run is complete
    ledger.remove()
    return summary


def _publish(params, out: Path, ledger: Ledger, rows, states, jobs, space) -> dict:
    """Shards from the ledger's accepted samples (streamed), then the manifest."""
    gen = params.generate
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(f"{gen.dataset}-*.tar"), *out.glob("*" + tario.TMP_SUFFIX)]:
        stale.unlink()
    grid: list[np.ndarray] = []

    def accepted_samples():
        for done in ledger.batches():
            for s in done.samples:
                if len(grid) < 64:
                    grid.append(tario.decode_png(s["png"]))
                yield s

    index_entries = shards.write_shards(
        out, gen.dataset, accepted_samples(), params.output.shard_size
    )
    shard_of = {}
    for entry in index_entries:
        shard_of.update({k: entry["shard"] for k in _keys_in(out / entry["shard"])})
    frame = pd.DataFrame(rows)
    if len(frame):
        # replayed rows come back from JSON with sorted keys: one column order for all runs
        first = ["key", "batch", "index", "seed", "cell", *space.names]
        frame = frame[first + sorted(c for c in frame.columns if c not in first)]
        frame["shard"] = frame["key"].map(shard_of)
    shards.write_manifest(out / "manifest.parquet", frame)
    if grid:
        save_grid(np.stack(grid), out / "plots" / "accepted_grid.png")
    quotas = sum(s.quotas for s in states)
    accepted = sum(s.accepted for s in states)
    generated = sum(s.generated for s in states)
    summary = {
        "shards": index_entries,
        "dataset": gen.dataset,
        "cells": space.cell_names(),
        "quotas": quotas.tolist(),
        "accepted": accepted.tolist(),
        "generated": generated,
        "batches": max((s.next_batch for s in states), default=0),
        "complete": all(s.done for s in states),
        "shortfall": {k: v for s in states for k, v in shortfall(s, space).items()}
        if len(states) == 1
        else {},
        "reasons": frame["reason"].value_counts().to_dict() if len(frame) else {},
        "samples_per_accepted": generated / max(1, int(accepted.sum())),
        "generation_seconds": round(sum(s.seconds for s in states), 2),
    }
    if params.model.kind == "text2image":
        summary["cfg_scale"] = params.model.cfg_scale
        summary["prompts"] = [
            {
                "prompt": p.prompt,
                "negative_prompt": p.negative_prompt,
                "target": t.probs.round(6).tolist(),
                "quotas": s.quotas.tolist(),
                "accepted": s.accepted.tolist(),
                "generated": s.generated,
                "complete": s.done,
                "shortfall": shortfall(s, space),
            }
            for (p, t, _), s in zip(jobs, states, strict=True)
        ]
        summary["shortfall"] = {
            f"prompt {k}: {cell}": v
            for k, s in enumerate(states)
            for cell, v in shortfall(s, space).items()
        }
    return summary


def _keys_in(path: Path) -> list[str]:
    return [s["__key__"] for s in tario.iter_shard(path)]


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
        "wall_seconds": index["wall_seconds"],
        "verifier_disagreement_rate": float((~frame["verifiers_agree"].astype(bool)).mean())
        if "verifiers_agree" in frame and len(frame)
        else None,
        "mode": params.generate.mode,
        "guidance_mode": params.guidance.mode,
    }
    shards.write_json(report_dir / "metrics.json", metrics)
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
        prog="python -m fairsynth.pipeline", description="run one pipeline stage"
    )
    ap.add_argument(
        "stage", choices=["reference", "audit", "train_adp", "generate", "report", "show"]
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = ap.parse_args(argv)
    try:
        return _run_stage(a)
    except (ConfigError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"fairsynth: error: {exc}", file=sys.stderr)
        return 2


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
