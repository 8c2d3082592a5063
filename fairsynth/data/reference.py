"""Reference datasets: readers (image folder + labels file, webdataset shards) and the audit."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.data import tario
from fairsynth.data.labels import (
    FILE_COLUMNS,
    METADATA_FILES,
    LabelMapping,
    labels_from_frame,
    relative_path,
    match_labels,
    read_labels_file,
)
from fairsynth.core.attributes import AttributeSpace, Target
from fairsynth.core.metrics import cell_counts, fairness_discrepancy, kl_divergence, total_variation

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
Classifier = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclass
class ReferenceData:
    keys: list[str]
    labels: dict[str, np.ndarray]  # attribute -> class index per sample
    source: str  # where the labels came from: "labels file", "shard metadata", "classifier"
    unlabelled: int = 0  # images a labels file does not name (not in the audit)


def read_image_folder(
    folder: str | Path,
    space: AttributeSpace,
    labels_file: str | Path | None = None,
    classifier: Classifier | None = None,
    mapping: LabelMapping = LabelMapping(),
) -> ReferenceData:
    """An image folder (nested folders too); labels from ``labels_file`` (a ``file``,
    ``file_name`` or ``key`` column + one per attribute), else from the folder's own
    ``metadata.csv`` / ``metadata.jsonl`` (Hugging Face's ImageFolder convention), else from
    ``classifier`` on the decoded images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"reference folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise ValueError(f"reference folder {folder} holds no images ({', '.join(IMAGE_EXTS)})")
    if labels_file is None:
        labels_file = next((folder / m for m in METADATA_FILES if (folder / m).is_file()), None)
    if labels_file is not None:
        return _folder_with_labels_file(folder, files, space, labels_file, mapping)
    if classifier is None:
        raise ValueError(f"reference folder {folder}: no labels file and no classifier to label it")
    keys, preds, batch_size = [], {n: [] for n in space.names}, 512
    for s in range(0, len(files), batch_size):
        chunk = files[s : s + batch_size]
        images = stack_images([_load_image(p) for p in chunk], [str(p) for p in chunk])
        probs = classifier(images)
        for n in space.names:
            preds[n].append(probs[n].argmax(1))
        keys += [p.stem for p in chunk]
    return ReferenceData(keys, {n: np.concatenate(v) for n, v in preds.items()}, "classifier")


def _folder_with_labels_file(
    folder: Path, files: list[Path], space: AttributeSpace, labels_file, mapping: LabelMapping
) -> ReferenceData:
    frame = read_labels_file(labels_file)
    col = next((c for c in FILE_COLUMNS if c in frame.columns), None)
    if col is None:
        raise ValueError(
            f"{labels_file}: needs a column naming each image, one of {list(FILE_COLUMNS)} "
            f"(columns: {list(frame.columns)})"
        )
    frame = frame.astype({col: str})
    if col != "key":  # paths as written: relative to the folder, or absolute inside it
        root = folder.resolve()
        frame[col] = [relative_path(v, root) for v in frame[col]]
    names = [p.relative_to(folder).as_posix() if col != "key" else p.stem for p in files]
    frame = match_labels(frame, col, names, str(labels_file), str(folder))
    return ReferenceData(
        list(frame[col]),
        labels_from_frame(frame, space, str(labels_file), mapping),
        "labels file",
        unlabelled=len(set(names) - set(frame[col])),
    )


def read_shards(
    folder_or_pattern: str | Path,
    space: AttributeSpace,
    classifier: Classifier | None = None,
    labels_file: str | Path | None = None,
    mapping: LabelMapping = LabelMapping(),
) -> ReferenceData:
    """webdataset shards: labels from a labels file, else each sample's ``.json`` member, else the
    classifier."""
    path = Path(folder_or_pattern)
    shards = sorted(path.glob("*.tar")) if path.is_dir() else sorted(path.parent.glob(path.name))
    if not shards:
        raise ValueError(f"no webdataset shards (*.tar) at {folder_or_pattern}")
    if labels_file is None and path.is_dir() and (path / "labels.parquet").is_file():
        labels_file = path / "labels.parquet"
    if labels_file is not None:
        return _shards_with_labels_file(shards, space, labels_file, str(folder_or_pattern), mapping)
    keys, metas, images, where = _read_members(shards, classifier is not None)
    if not keys:
        raise ValueError(f"{folder_or_pattern}: the reference shards hold no samples")
    wanted = [mapping.columns.get(n, n) for n in space.names]
    if keys and all(m is not None and all(c in m for c in wanted) for m in metas):
        frame = pd.DataFrame([{c: m[c] for c in wanted} for m in metas])
        return ReferenceData(
            keys,
            labels_from_frame(frame, space, f"{folder_or_pattern} (.json members)", mapping),
            "shard metadata",
        )
    if classifier is None:
        raise ValueError(
            f"{folder_or_pattern}: samples carry no labels and no classifier was given"
        )
    probs = classifier(stack_images(images, where))
    return ReferenceData(keys, {n: probs[n].argmax(1) for n in space.names}, "classifier")


def _shards_with_labels_file(
    shards: list[Path], space: AttributeSpace, labels_file: str | Path, where: str,
    mapping: LabelMapping,
) -> ReferenceData:  # fmt: skip
    frame = read_labels_file(labels_file)
    if "key" not in frame.columns:
        raise ValueError(f"{labels_file}: needs a 'key' column")
    frame = frame.astype({"key": str})
    names = [k for shard in shards for k in shard_keys(shard)]
    frame = match_labels(frame, "key", names, str(labels_file), where)
    return ReferenceData(
        list(frame["key"]),
        labels_from_frame(frame, space, str(labels_file), mapping),
        "labels file",
        unlabelled=len(set(names) - set(frame["key"])),
    )


def _read_members(shards: list[Path], need_images: bool):
    """Every sample's key and ``.json`` metadata (None without one); with ``need_images``, the
    images of the samples without metadata (and where each is, for messages)."""
    keys, metas, images, where = [], [], [], []
    for shard in shards:
        try:
            for sample in tario.iter_shard(shard):
                key = sample["__key__"]
                keys.append(key)
                try:
                    metas.append(json.loads(sample["json"]) if "json" in sample else None)
                except ValueError as exc:
                    raise ValueError(f"{shard}: sample {key!r}: unreadable .json ({exc})") from exc
                if need_images and metas[-1] is None:
                    if "png" not in sample:
                        raise ValueError(
                            f"{shard}: sample {key!r} has no .png member (members: "
                            f"{sorted(k for k in sample if k != '__key__')}; keys must not "
                            "contain dots)"
                        )
                    images.append(tario.decode_png(sample["png"], f"{shard}: sample {key!r}"))
                    where.append(f"{shard}: sample {key!r}")
        except (OSError, EOFError, tarfile.TarError) as exc:
            raise ValueError(f"{shard}: unreadable or truncated tar ({exc})") from exc
    return keys, metas, images, where


def shard_keys(shard: Path) -> list[str]:
    """The sample keys of a shard, from its tar headers (nothing is decoded)."""
    try:
        with tarfile.open(shard, mode="r") as tar:
            keys = [m.name.split(".", 1)[0] for m in tar if m.isfile()]
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise ValueError(f"{shard}: unreadable or truncated tar ({exc})") from exc
    return list(dict.fromkeys(keys))


def stack_images(images: list[np.ndarray], names: list[str]) -> np.ndarray:
    """One array of same-sized images; the first image of another size is named."""
    shape = images[0].shape
    for image, name in zip(images, names, strict=True):
        if image.shape != shape:
            raise ValueError(
                f"{name}: image of {image.shape[1]}x{image.shape[0]} pixels; the reference's "
                f"images must all have one size ({shape[1]}x{shape[0]}, as {names[0]})"
            )
    return np.stack(images)


def _load_image(path: Path) -> np.ndarray:
    return tario.open_image(path, str(path))


def audit(data: ReferenceData, target: Target) -> dict:
    """Per-cell counts and fractions of the reference over the target's cells, and distances."""
    if not data.keys:
        raise ValueError("the reference dataset is empty")
    cells = target.space.cell_index({n: data.labels[n] for n in target.space.names})
    counts = cell_counts(cells, target.space.n_cells)
    frac = counts / counts.sum()
    return {
        "n": int(counts.sum()),
        "label_source": data.source,
        "unlabelled_images": data.unlabelled,
        "cells": target.space.cell_names(),
        "counts": counts.tolist(),
        "fractions": frac.round(6).tolist(),
        "target": target.probs.round(6).tolist(),
        "fd": fairness_discrepancy(frac, target.probs),
        "kl_target_to_reference": kl_divergence(target.probs, frac),
        "tv": total_variation(frac, target.probs),
    }


def load_images(source: str, path: str | Path, keys: list[str]) -> list[np.ndarray | None]:
    """The images of ``keys`` (in that order) from an image folder or shards; an unreadable
    image comes back as None (the verifier rejects it, the audit counts it)."""
    want = set(keys)
    found: dict[str, np.ndarray | None] = {}
    path = Path(path)
    if source == "folder":
        for p in sorted(q for q in path.rglob("*") if q.suffix.lower() in IMAGE_EXTS):
            for key in (p.relative_to(path).as_posix(), p.stem):
                if key in want:
                    try:
                        found[key] = _load_image(p)
                    except ValueError:
                        found[key] = None
    else:
        shards = (
            sorted(path.glob("*.tar")) if path.is_dir() else sorted(path.parent.glob(path.name))
        )
        for shard in shards:
            for sample in tario.iter_shard(shard):
                if sample["__key__"] in want and "png" in sample:
                    try:
                        found[sample["__key__"]] = tario.decode_png(sample["png"])
                    except Exception:
                        found[sample["__key__"]] = None
            if len(found) == len(want):
                break
    return [found.get(k) for k in keys]


def verifier_confusion(verifier, images: list, labels: dict[str, np.ndarray], space) -> dict:
    """Per attribute: a confusion matrix (rows: labelled class, columns: verified class),
    accuracy among judged samples, and how many samples the verifier rejected."""
    verdict = verifier.verify(images)
    judged = np.array([r is None for r in verdict.rejects])
    out = {}
    for name, classes in space.attributes:
        if name not in verdict.probs:
            continue
        pred = verdict.probs[name].argmax(1)
        k = len(classes)
        m = np.zeros((k, k), dtype=int)
        np.add.at(m, (labels[name][judged], pred[judged]), 1)
        out[name] = {
            "classes": list(classes),
            "matrix": m.tolist(),
            "accuracy": float(np.trace(m) / max(1, m.sum())),
            "recall": {c: float(m[i, i] / max(1, m[i].sum())) for i, c in enumerate(classes)},
            "rejected": int((~judged).sum()),
        }
    return out
