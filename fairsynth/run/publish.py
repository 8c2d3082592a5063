"""Publishing a run: manifest rows per judged sample, then shards streamed from the ledger's
accepted samples, the manifest, a grid of accepted samples and the run summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.data import shards, tario
from fairsynth.data.grid import save_grid
from fairsynth.data.runlog import read_run_record
from fairsynth.run.judge import ACCEPTED, JudgedBatch, shortfall
from fairsynth.run.ledger import Ledger
from fairsynth.run.spec import RunSpec


def batch_records(run: RunSpec, job: int, res: JudgedBatch) -> tuple[list[dict], list[dict]]:
    """Manifest rows of every sample of a judged batch, and the accepted samples to publish."""
    space = run.space
    provenance = prompt_provenance(run, job)
    batch_rows, batch_samples = [], []
    for i in range(len(res.images)):
        key = shards.sample_key(run.dataset, res.batch, i)
        cell = int(res.cells[i])
        classes = {n: space.classes(n)[int(res.probs[n][i].argmax())] for n in space.names}
        row = {
            "key": key,
            "batch": res.batch,
            "index": i,
            "job": job,
            "seed": run.seed,
            "cell": space.cell_names()[cell],
            **classes,
            **{f"p_{n}": res.probs[n][i].round(6).tolist() for n in space.names},
            "confidence": round(float(res.confidence[i]), 6),
            "accepted": res.reasons[i] == ACCEPTED,
            "reason": res.reasons[i],
            "guidance_mode": run.recipe.guidance.mode,
            "guidance_hash": run.guidance_hash,
            "model": run.model_name,
            "batch_target": res.target.round(6).tolist(),
            **provenance,
        }
        if res.second is not None:
            for n, p2 in res.second.items():
                row[f"p2_{n}"] = p2[i].round(6).tolist()
            row["verifiers_agree"] = all(
                int(p2[i].argmax()) == int(res.probs[n][i].argmax()) for n, p2 in res.second.items()
            )
        batch_rows.append(row)
        if row["accepted"]:
            meta = {k: row[k] for k in ("key", "cell", "batch", "seed", "confidence", *space.names)}
            meta.update(provenance)
            batch_samples.append({"__key__": key, "png": res.images[i], "json": meta, "cls": cell})
    return batch_rows, batch_samples


def prompt_provenance(run: RunSpec, job: int) -> dict:
    """Prompt settings per sample (text-to-image), as ``PromptedModel.provenance`` gives them."""
    prompt = run.jobs[job].prompt
    if prompt is None:
        return {}
    return {
        "prompt": prompt.prompt,
        "negative_prompt": prompt.negative_prompt,
        "cfg_scale": run.recipe.model.cfg_scale,
    }


def publish(run: RunSpec, ledger: Ledger, rows: list[dict], states: list) -> dict:
    """Shards from the ledger's accepted samples (streamed), then the manifest."""
    out, space, dataset = run.output_dir, run.space, run.dataset
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(f"{dataset}-*.tar"), *out.glob("*" + tario.TMP_SUFFIX)]:
        stale.unlink()
    grid: list[np.ndarray] = []

    def accepted_samples():
        for done in ledger.batches():
            for s in done.samples:
                if len(grid) < 64:
                    grid.append(tario.decode_png(s["png"]))
                yield s

    index_entries = shards.write_shards(out, dataset, accepted_samples(), run.shard_size)
    shard_of = {}
    for entry in index_entries:
        shard_of.update({k: entry["shard"] for k in keys_in(out / entry["shard"])})
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
        "manifest_sha256": shards.sha256_file(out / "manifest.parquet"),
        "dataset": dataset,
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
    if run.text2image:
        summary["cfg_scale"] = run.recipe.model.cfg_scale
        summary["prompts"] = [
            {
                "prompt": job.prompt.prompt,
                "negative_prompt": job.prompt.negative_prompt,
                "target": job.target.probs.round(6).tolist(),
                "quotas": s.quotas.tolist(),
                "accepted": s.accepted.tolist(),
                "generated": s.generated,
                "complete": s.done,
                "shortfall": shortfall(s, space),
            }
            for job, s in zip(run.jobs, states, strict=True)
        ]
        summary["shortfall"] = {
            f"prompt {k}: {cell}": v
            for k, s in enumerate(states)
            for cell, v in shortfall(s, space).items()
        }
    return summary


def keys_in(path: Path) -> list[str]:
    return [s["__key__"] for s in tario.iter_shard(path)]


def published_summary(out: Path, fingerprint_id: str) -> dict | None:
    """The summary of the output already in ``out`` when a complete run made it from the same
    inputs (the fingerprint in its ``index.json``) and its shards and manifest are intact; else
    None. The same inputs give the same bytes, so running again would only rewrite them."""
    try:
        index = json.loads((out / "index.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(index, dict) or index.get("fingerprint") != fingerprint_id:
        return None
    named = {e["shard"]: e["sha256"] for e in index.get("shards", [])}
    present = {p.name for p in out.glob(f"{index.get('dataset')}-*.tar")}
    recorded = {**named, "manifest.parquet": index.get("manifest_sha256")}
    if present != set(named) or not shards.files_intact(out, recorded):
        return None
    return {**index, **read_run_record(out), "up_to_date": True}
