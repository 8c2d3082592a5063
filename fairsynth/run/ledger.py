"""The generation ledger: what a run has generated so far, batch by batch, safe against crashes.

Each finished batch is one tar file ``batch-%06d.tar`` (written atomically by ``tario``): the
accepted samples exactly as they will go into the published shards, plus a ``batch_rows``
member with the manifest rows of every sample of the batch (accepted or not). A run killed at
any moment loses at most the batch in flight; run again with the same params, it replays the
ledger (the accepted counts, the next batch index) and goes on where it stopped. Because batch
b's noise depends on (seed, b) only, the resumed run publishes the same samples as an
uninterrupted one.

A ledger lives in ``<output dir>.ledger/<fingerprint>/``: the fingerprint covers everything
that decides the samples, so a run with other params never replays a foreign ledger. Outside
the output folder because DVC empties a stage's outputs before it runs the stage again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fairsynth.data import tario

BATCH_NAME = "batch-{batch:06d}.tar"
ROWS_KEY = "batch_rows"


@dataclass
class LedgerBatch:
    batch: int
    rows: list[dict]  # manifest rows of every sample of the batch
    samples: list[dict[str, bytes]]  # accepted samples: __key__ + png/json/cls bytes


def fingerprint(obj: object) -> str:
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def ledger_dir(output_dir: str | Path, fp: str) -> Path:
    out = Path(output_dir).resolve()  # an alias (symlink) of the output shares its ledger
    return out.with_name(out.name + ".ledger") / fp


def discard_ledger(output_dir: str | Path, fp: str) -> None:
    """Remove the ledger of a run whose output is complete (a run killed after publishing, before
    it removed its ledger, leaves one: the output is whole, the ledger redundant)."""
    path = ledger_dir(output_dir, fp)
    if path.is_dir():
        Ledger(path).remove()


class Ledger:
    """Append-only per-batch record under ``path`` (see the module docstring)."""

    def __init__(self, path: str | Path, description: dict | None = None, first_batch: int = 0):
        self.path = Path(path)
        self.first_batch = first_batch  # a top-up numbers its batches after its parent's
        self.path.mkdir(parents=True, exist_ok=True)
        for tmp in self.path.glob("*" + tario.TMP_SUFFIX):
            tmp.unlink()  # a batch in flight when the last run died
        run = self.path / "run.json"
        if description is not None and not run.exists():
            from fairsynth.data.shards import write_json

            write_json(run, description)

    def batches(self) -> Iterator[LedgerBatch]:
        """Recorded batches first, first + 1, ... in order, up to the first missing one. A damaged batch
        (truncated, corrupt, without its rows) is set aside with every later one (they are
        generated again, to the same bytes), so a damaged file never blocks a resume."""
        b = self.first_batch
        while (self.path / BATCH_NAME.format(batch=b)).is_file():
            try:
                batch = self.read(b)
            except (ValueError, OSError, EOFError, tarfile.TarError, KeyError) as exc:
                self._set_aside(b, exc)
                return
            yield batch
            b += 1

    def _set_aside(self, first: int, why: Exception) -> None:
        dest = self.path / "damaged"
        dest.mkdir(exist_ok=True)
        moved = []
        b = first
        while (src := self.path / BATCH_NAME.format(batch=b)).is_file():
            os.replace(src, dest / src.name)
            moved.append(src.name)
            b += 1
        print(
            f"fairsynth: warning: {self.path / moved[0]} is damaged ({why}); set aside in {dest} "
            f"with {len(moved) - 1} later batch(es); they are generated again",
            file=sys.stderr,
        )

    def read(self, batch: int) -> LedgerBatch:
        path = self.path / BATCH_NAME.format(batch=batch)
        rows, samples = None, []
        for sample in tario.iter_shard(path):
            if sample["__key__"] == ROWS_KEY:
                rows = json.loads(sample["json"])
            else:
                samples.append(sample)
        if rows is None:
            raise ValueError(f"{path}: ledger batch without its rows")
        return LedgerBatch(batch, rows, samples)

    def append(self, batch: int, rows: list[dict], samples: list[dict]) -> None:
        path = self.path / BATCH_NAME.format(batch=batch)
        if path.exists():
            raise FileExistsError(f"{path}: batch {batch} is already in the ledger")
        tario.write_shard(path, [*samples, {"__key__": ROWS_KEY, "json": rows}])

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        parent = self.path.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
