"""Publishing a run: manifest rows per judged sample, then shards streamed from the ledger's
accepted samples, the manifest, a grid of accepted samples and the run summary."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.data import shards, tario
from fairsynth.data.grid import save_grid
from fairsynth.data.runlog import read_run_record
from fairsynth.data.shards import VERSIONS, version_dir
from fairsynth.run.judge import ACCEPTED, JudgedBatch, shortfall
from fairsynth.run.ledger import Ledger
from fairsynth.run.spec import RunSpec
from fairsynth.run.writers import DEFAULT, WRITERS


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
    """The accepted samples (streamed from the ledger) through the publication writer, then the
    manifest, the grid of accepted samples, and the summary. A top-up keeps its parent's parts
    as they are and adds its own after them; a new run replaces all."""
    out, writer = run.output_dir, WRITERS[DEFAULT]
    out.mkdir(parents=True, exist_ok=True)
    topup = run.topup
    kept = {e["shard"] for e in topup.parent["shards"]} if topup else set()
    for stale in writer.parts(out, run.dataset):
        if stale.name not in kept:
            stale.unlink()
    if topup is None:
        shutil.rmtree(out / VERSIONS, ignore_errors=True)  # their shards are gone
    grid: list[np.ndarray] = []

    def accepted_samples():
        for done in ledger.batches():
            for s in done.samples:
                if len(grid) < 64:
                    grid.append(tario.decode_png(s["png"]))
                yield s

    first = topup.first_shard if topup else 0
    new_entries = writer.write(out, run.dataset, accepted_samples(), run.shard_size, first)
    shard_of = {}
    for entry in new_entries:
        shard_of.update({k: entry["shard"] for k in writer.keys(out / entry["shard"])})
    frame = _manifest(run, rows, shard_of)
    shards.write_manifest(out / "manifest.parquet", frame)
    if grid:
        save_grid(np.stack(grid), out / "plots" / "accepted_grid.png")
    elif topup is None:  # DVC keeps this output between runs (persist): no stale grid
        (out / "plots" / "accepted_grid.png").unlink(missing_ok=True)
    return _summary(run, states, frame, new_entries)


def _manifest(run: RunSpec, rows: list[dict], shard_of: dict[str, str]) -> pd.DataFrame:
    """One row per judged sample (a top-up's after its parent's), its part named."""
    frame = pd.DataFrame(rows)
    if len(frame):
        frame["shard"] = frame["key"].map(shard_of)
    if run.topup is not None:
        frame = pd.concat([pd.read_parquet(run.topup.parent_manifest), frame], ignore_index=True)
    if len(frame):
        # replayed rows come back from JSON with sorted keys: one column order for all runs
        first = ["key", "batch", "index", "seed", "cell", *run.space.names]
        frame = frame[first + sorted(c for c in frame.columns if c not in first)]
    return frame


def _summary(run: RunSpec, states: list, frame: pd.DataFrame, new_entries: list[dict]) -> dict:
    """The publication's index (without its fingerprint and run record)."""
    out, space, topup = run.output_dir, run.space, run.topup
    quotas = sum(s.quotas for s in states)
    accepted = sum(s.accepted for s in states)
    generated = sum(s.generated for s in states)
    parent = topup.parent if topup else {}
    if topup is not None:
        changes = {**topup.changes, "added": accepted.tolist(), "generated": generated}
        quotas = quotas + np.asarray(parent["quotas"])
        accepted = accepted + np.asarray(parent["accepted"])
        generated += int(parent["generated"])
    summary = {
        "shards": list(parent.get("shards", [])) + new_entries,
        "manifest_sha256": shards.sha256_file(out / "manifest.parquet"),
        "dataset": run.dataset,
        "cells": space.cell_names(),
        "quotas": quotas.tolist(),
        "accepted": accepted.tolist(),
        "generated": generated,
        "batches": max((s.next_batch for s in states), default=run.first_batch),
        "complete": all(s.done for s in states),
        "version": int(parent.get("version", 0)) + 1,
        "parent": parent.get("fingerprint"),
        "recipe": run.recipe_id,
        "reference": run.reference_id,
        "reference_counts": list(run.reference_counts) if run.reference_counts else None,
        "changes": changes if topup is not None else {"kind": "new"},
        "shortfall": {k: v for s in states for k, v in shortfall(s, space).items()}
        if len(states) == 1
        else {},
        "reasons": frame["reason"].value_counts().to_dict() if len(frame) else {},
        "samples_per_accepted": generated / max(1, int(accepted.sum())),
        "generation_seconds": round(sum(s.seconds for s in states), 2),
    }
    for key in ("parent", "reference", "reference_counts"):  # a first or standalone version
        if summary[key] is None:
            del summary[key]
    if run.text2image:
        summary.update(_prompt_summary(run, states))
    return summary


def _prompt_summary(run: RunSpec, states: list) -> dict:
    """Text-to-image: the scale, each prompt's own quotas and outcome, shortfalls by prompt."""
    space = run.space
    prompts = [
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
    return {
        "cfg_scale": run.recipe.model.cfg_scale,
        "prompts": prompts,
        "shortfall": {
            f"prompt {k}: {cell}": v
            for k, s in enumerate(states)
            for cell, v in shortfall(s, space).items()
        },
    }


def record_version(out: Path, index: dict) -> None:
    """Keep this publication's index and manifest under ``versions/`` (written before the
    top-level ``index.json``): a later top-up reads its parent there, and the feed reads any
    version still on disk."""
    where = version_dir(out, index["version"])
    shards.write_atomic(where / "manifest.parquet", (out / "manifest.parquet").read_bytes())
    shards.write_json(where / "index.json", index)


def published_summary(
    out: Path,
    fingerprint_id: str,
    recipe_id: str = "",
    reference_id: str | None = None,
    reference_counts: tuple[int, ...] | None = None,
) -> dict | None:
    """The summary of the output already in ``out`` when a complete run made it from the same
    inputs and its shards and manifest are intact; else None. The same inputs: the fingerprint
    in its ``index.json``, or (augment) the same recipe over the same reference (content and
    counts), which is what a top-up publication records. The same inputs give the same bytes,
    so running again would only rewrite them. A publication found under ``versions/`` only
    (a run that started over died before publishing) gets its ``index.json`` back."""
    found = shards.latest_publication(out)
    if found is None:
        return None
    index, from_versions = found
    same = index.get("fingerprint") == fingerprint_id or (
        reference_id is not None
        and index.get("recipe") == recipe_id
        and index.get("reference") == reference_id
        and tuple(index.get("reference_counts") or ()) == tuple(reference_counts or ())
    )
    if not same:
        return None
    named = {e["shard"]: e["sha256"] for e in index.get("shards", [])}
    present = {p.name for p in out.glob(f"{index.get('dataset')}-*.tar")}
    recorded = {**named, "manifest.parquet": index.get("manifest_sha256")}
    if present != set(named) or not shards.files_intact(out, recorded):
        return None
    if from_versions:
        shards.write_json(out / "index.json", index)
    return {**index, **read_run_record(out), "up_to_date": True}


def intact_version(out: Path) -> tuple[dict, Path] | None:
    """The latest complete publication whose shards and own manifest copy are intact, with that
    manifest's path: what a top-up may build on. Shards beyond it (a top-up that died while
    publishing) do not count against it; the top-up replaces them."""
    found = shards.latest_publication(out)
    if found is None:
        return None
    latest = found[0]
    if "version" not in latest or not latest.get("complete"):
        return None
    index = shards.read_index(out, latest["version"])
    if index != latest:
        return None
    manifest = version_dir(out, latest["version"]) / "manifest.parquet"
    recorded = {e["shard"]: e["sha256"] for e in index["shards"]}
    if not shards.files_intact(out, recorded):
        return None
    if not shards.files_intact(manifest.parent, {manifest.name: index["manifest_sha256"]}):
        return None
    return index, manifest
