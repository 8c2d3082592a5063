"""What a published dataset says about itself: a run's facts gathered once, then written as its
dataset card (``README.md``), its Croissant metadata (``croissant.json``) and its report page
(``report.html``), beside the report's ``metrics.json``."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.app.config import Params, as_dict
from fairsynth.app.config.base import hashed
from fairsynth.core import plugins
from fairsynth.data import shards
from fairsynth.data.card import dataset_card
from fairsynth.data.croissant import croissant
from fairsynth.data.page import report_page
from fairsynth.data.tario import decode_png, iter_shard

PUBLICATION_FILES = ("README.md", "croissant.json", "report.html")
GRID_PER_CELL = 16  # samples shown per cell on the page


def params_hash(params: Params) -> str:
    values = {k: hashed(k, v) if isinstance(v, dict) else v for k, v in as_dict(params).items()}
    blob = json.dumps(values, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def publication_facts(params: Params, audit_report: dict | None, metrics: dict,
                      frame: pd.DataFrame, report_dir: Path, run: dict) -> dict:  # fmt: skip
    """Everything the card, the Croissant file and the page say, from the params, the published
    folder (``index.json``, manifest, run record), the reference audit and the metrics."""
    out = Path(params.output.dir)
    index = json.loads((out / "index.json").read_text())
    space = params.build_target().space
    rel = lambda p: Path(os.path.relpath(p, report_dir)).as_posix()  # noqa: E731
    facts = {
        "name": params.card.name,
        "license": params.card.license,
        "use_cases": params.card.use_cases,
        "n": metrics["samples_accepted"],
        "complete": bool(index.get("complete", True)),
        "shortfall": index.get("shortfall") or {},
        "cells": metrics["cells"],
        "attributes": {n: list(space.classes(n)) for n in space.names},
        "target": metrics["target"],
        "counts": metrics["counts_synthetic"],
        "quotas": metrics["quotas"],
        "metrics": {
            k: metrics.get(k)
            for k in ("fd_before", "fd_after", "fd_after_soft", "kl_target_to_after", "tv_after")
        },  # fmt: skip
        "estimated_true": metrics.get("estimated_true"),
        "generated": metrics["samples_generated"],
        "samples_per_accepted": metrics["samples_per_accepted"],
        "rejections": metrics["rejections"],
        "disagreement_rate": metrics.get("verifier_disagreement_rate"),
        "mode": params.generate.mode,
        "reference": {
            "source": params.reference.source,
            "path": params.reference.path,
            "counts": (audit_report or {}).get("counts"),
            "label_source": (audit_report or {}).get("label_source"),
        },
        "verifiers": {"first": params.verify.verifier, "second": params.verify.second},
        "confusion": (audit_report or {}).get("verifiers"),
        "model": _model_facts(params),
        "guidance": as_dict(params.guidance),
        "adp": _adp_facts(params),
        "fingerprint": index["fingerprint"],
        "params_hash": params_hash(params),
        "guidance_hash": ", ".join(sorted(set(frame.loc[frame["accepted"], "guidance_hash"]))),
        "shards": [{**s, "path": rel(out / s["shard"])} for s in index["shards"]],
        "manifest": {
            "path": rel(out / "manifest.parquet"),
            "sha256": shards.sha256_file(out / "manifest.parquet"),
        },  # fmt: skip
        "timing": _timing(run),
        "card_dir": Path(report_dir).as_posix(),
        "output_dir": out.as_posix(),
    }
    return facts


def _model_facts(params: Params) -> dict:
    model = params.model
    return {
        "path": model.path,
        "kind": model.kind,
        "scheduler": model.scheduler or "ddim",
        "steps": model.steps,
        "eta": model.eta,
        "layer": model.layer,
        "cfg_scale": model.cfg_scale if model.kind == "text2image" else None,
        "prompts": [p.prompt for p in model.prompts or []],
    }


def write_publication(params: Params, audit_report: dict | None, metrics: dict,
                      frame: pd.DataFrame, report_dir: Path, run: dict) -> dict:  # fmt: skip
    """The card, the Croissant file and the page, atomically each; returns the facts."""
    facts = publication_facts(params, audit_report, metrics, frame, report_dir, run)
    grids = samples_by_cell(Path(params.output.dir), frame, facts["cells"])
    shards.write_atomic(report_dir / "README.md", dataset_card(facts).encode())
    shards.write_json(report_dir / "croissant.json", croissant(facts))
    page = report_page(
        facts, grids, distribution_png=(report_dir / "distribution.png").read_bytes()
    )
    shards.write_atomic(report_dir / "report.html", page.encode())
    return facts


def samples_by_cell(out: Path, frame: pd.DataFrame, cells: list[str],
                    per_cell: int = GRID_PER_CELL) -> dict[str, np.ndarray]:  # fmt: skip
    """The first ``per_cell`` accepted samples of each cell (in manifest order), as images."""
    acc = frame[frame["accepted"]]
    wanted = {c: list(acc.loc[acc["cell"] == c, "key"][:per_cell]) for c in cells}
    keys = {k for ks in wanted.values() for k in ks}
    images: dict[str, np.ndarray] = {}
    for shard in acc.loc[acc["key"].isin(keys), "shard"].unique():
        for sample in iter_shard(out / shard):
            if sample["__key__"] in keys:
                images[sample["__key__"]] = decode_png(sample["png"], sample["__key__"])
    return {c: np.stack([images[k] for k in ks]) for c, ks in wanted.items() if ks}


def _adp_facts(params: Params) -> dict:
    folder = Path(plugins.resolve("adp", params.adp.path))
    meta_path = folder / "adp.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    keep = ("trajectories", "recorded_steps", "base_model", "layer", "steps", "pseudo_labeller",
            "recommended", "inputs_fingerprint")  # fmt: skip
    facts = {"path": params.adp.path, **{k: meta[k] for k in keep if k in meta}}
    if "trajectories" in meta:
        facts["about"] = (f"trained on {meta['trajectories']} sampling trajectories of "
                          f"`{meta.get('base_model', '?')}`, pseudo-labelled by "
                          f"`{meta.get('pseudo_labeller', '?')}`")  # fmt: skip
    return facts


def _timing(run: dict) -> dict:
    keys = ("generation_seconds", "wall_seconds", "time_split", "finished_at")
    return {k: run[k] for k in keys if k in run}
