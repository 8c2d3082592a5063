"""Publishing accepted samples: webdataset shards, the manifest ledger and the index.

Shards are ``<out>/<dataset>-%06d.tar`` with members ``<key>.png``, ``<key>.json`` and
``<key>.cls`` (the cell index); keys contain no dots; headers are fixed so the same samples give
the same bytes; each shard is written under a temporary name and renamed when complete.
The manifest (``manifest.parquet``) has one row per generated sample, accepted or not.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.data import tario

SHARD_NAME = "{dataset}-{index:06d}.tar"
VERSIONS = "versions"  # <output>/versions/v000001/{index.json, manifest.parquet}: each publication


def version_dir(out: str | Path, version: int) -> Path:
    return Path(out) / VERSIONS / f"v{int(version):06d}"


def read_index(out: str | Path, version: int | None = None) -> dict | None:
    """The latest publication's ``index.json`` (or version ``version``'s); None if absent."""
    path = Path(out) / "index.json" if version is None else version_dir(out, version) / "index.json"
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return index if isinstance(index, dict) else None


def latest_publication(out: str | Path) -> tuple[dict, bool] | None:
    """The latest publication's index: ``index.json``, or, where a run that started over has not
    published yet or died before it did (it removes ``index.json`` first and replaces the shards
    only when it publishes), the newest ``versions/`` entry; and whether it came from there."""
    index = read_index(out)
    if index is not None:
        return index, False
    root = Path(out) / VERSIONS
    found = sorted(root.glob("v*/index.json")) if root.is_dir() else []
    for path in reversed(found):
        index = read_index(out, int(path.parent.name[1:]))
        if index is not None:
            return index, True
    return None


def sample_key(dataset: str, batch: int, index: int) -> str:
    key = f"{dataset}_b{batch:06d}_i{index:04d}"
    tario.check_key(key)
    return key


def write_shards(
    out_dir: str | Path,
    dataset: str,
    samples: Iterable[dict],
    shard_size: int,
    first: int = 0,
) -> list[dict]:
    """Write samples (``__key__``, ``png``, ``json``, ``cls``) into shards of ``shard_size``,
    numbered from ``first``; returns one index entry per shard (name, count, sha256)."""
    if shard_size < 1:
        raise ValueError("output.shard_size must be >= 1")
    out_dir = Path(out_dir)
    entries, chunk, index = [], [], first
    for sample in samples:
        chunk.append(sample)
        if len(chunk) == shard_size:
            entries.append(_flush(out_dir, dataset, index, chunk))
            chunk, index = [], index + 1
    if chunk:
        entries.append(_flush(out_dir, dataset, index, chunk))
    return entries


def _flush(out_dir: Path, dataset: str, index: int, chunk: list[dict]) -> dict:
    name = SHARD_NAME.format(dataset=dataset, index=index)
    tario.write_shard(out_dir / name, chunk)
    return {"shard": name, "samples": len(chunk), "sha256": sha256_file(out_dir / name)}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_intact(folder: str | Path, recorded: dict[str, str]) -> bool:
    """Every file named in ``recorded`` (name -> sha256) is in ``folder`` with that content.
    Hashes come from ``fairsynth.core.filehash`` (cached by size, mtime, ctime and inode), so a
    scheduled check of an unchanged output does not read its shards again."""
    from fairsynth.core.filehash import sha256_of

    folder = Path(folder)
    try:
        return all(sha256_of(folder / name) == sha for name, sha in recorded.items())
    except OSError:
        return False


def write_atomic(path: str | Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` in one step (a crash leaves the old file or the new one);
    a file that already holds exactly these bytes is not touched."""
    path = Path(path)
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + tario.TMP_SUFFIX)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: object) -> None:
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_manifest(path: str | Path, frame: pd.DataFrame) -> None:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    write_atomic(path, buf.getvalue())


def png_bytes(image: np.ndarray) -> bytes:
    return tario.encode_png(image)
