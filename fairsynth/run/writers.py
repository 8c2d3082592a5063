"""Publication writers: how accepted samples land on disk. One registered entry a format.

A writer writes the accepted samples (``__key__``, ``png``, ``json``, ``cls``) of a run into
its output folder as numbered parts, lists the parts a run made (so a new run can clear what an
older one left, and a top-up keep its parent's), and reads back the keys a part holds (the
manifest names each sample's part). ``publish`` writes through ``WRITERS[DEFAULT]``;
webdataset shards are the one format today, and the publication's readers (card, Croissant,
feed) still read its tar shards directly."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from fairsynth.data import shards, tario


class PublicationWriter(Protocol):
    name: str

    def write(
        self, out: Path, dataset: str, samples: Iterable[dict], part_size: int, first: int
    ) -> list[dict]:
        """Parts numbered from ``first``; one index entry per part (``shard``, count, sha256)."""

    def parts(self, out: Path, dataset: str) -> list[Path]:
        """The parts (and unfinished temporary files) of ``dataset`` in ``out``."""

    def keys(self, path: Path) -> list[str]:
        """The sample keys a part holds, in order."""


class WebdatasetWriter:
    """Tar shards of ``part_size`` samples, ``<dataset>-%06d.tar``, members ``<key>.png``,
    ``<key>.json``, ``<key>.cls`` (``fairsynth.data.shards``)."""

    name = "webdataset"

    def write(
        self, out: Path, dataset: str, samples: Iterable[dict], part_size: int, first: int
    ) -> list[dict]:
        return shards.write_shards(out, dataset, samples, part_size, first=first)

    def parts(self, out: Path, dataset: str) -> list[Path]:
        return [*out.glob(f"{dataset}-*.tar"), *out.glob("*" + tario.TMP_SUFFIX)]

    def keys(self, path: Path) -> list[str]:
        return [s["__key__"] for s in tario.iter_shard(path)]


WRITERS: dict[str, PublicationWriter] = {}


def register(writer: PublicationWriter) -> PublicationWriter:
    WRITERS[writer.name] = writer
    return writer


register(WebdatasetWriter())
DEFAULT = "webdataset"
