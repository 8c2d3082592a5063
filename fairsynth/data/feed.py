"""The training-data feed: published shards (and optionally the reference) as a torch dataset.

    from fairsynth.data.feed import Feed, make_loader

    feed = Feed("data/shards", reference="data/reference", shuffle=1000, seed=0)
    loader = make_loader(feed, batch_size=64, num_workers=2)
    for epoch in range(10):
        feed.set_epoch(epoch)           # a new, reproducible shard + sample order each epoch
        for batch in loader:
            batch["image"]              # float (B, 3, H, W) in [0, 1]
            batch["labels"]["skin"]     # int64 (B,): class index, -1 where not labelled
            batch["synthetic"]          # bool (B,): from the synthetic shards or the reference

Sources are anything webdataset opens (local paths, brace notation ``shard-{000000..000009}.tar``,
``http(s)://``, ``pipe:``), a folder (its ``*.tar``), or ``dvc://PATH[?repo=URL&rev=REV]``: a
file tracked by DVC, read from the DVC cache or remote through ``DVCFileSystem`` (the repo
defaults to the current directory). Plain ``webdataset.WebDataset`` reads the same shards: a
sample is ``KEY.png`` + ``KEY.json`` (the verified attribute classes) + ``KEY.cls`` (the cell).

Only accepted samples are fed: published shards hold nothing else, and a sample whose json
says ``"accepted": false`` is skipped. Labels are class indices in the given attribute order;
an attribute a sample does not name (the verifier judged only the guided attributes) is -1.
"""

from __future__ import annotations

import json
import multiprocessing
import sys
import urllib.parse
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset

from fairsynth.data.shards import VERSIONS, latest_publication, read_index
from fairsynth.data.tario import decode_png

DVC_SCHEME = "dvc://"


def open_dvc(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    """gopen handler for ``dvc://PATH?repo=URL&rev=REV`` (read only)."""
    from dvc.api import DVCFileSystem

    if mode != "rb":
        raise ValueError(f"{url}: DVC sources are read-only")
    parsed = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parsed.query)
    path = (parsed.netloc + parsed.path).lstrip("/")
    fs = DVCFileSystem(query.get("repo", ["."])[0], rev=query.get("rev", [None])[0])
    return fs.open(path, "rb")


sys.modules["webdataset.gopen"].gopen_schemes["dvc"] = open_dvc


def published_shards(folder: str | Path, version: int | None = None) -> list[str]:
    """The shards of a fairsynth output folder's latest publication (its ``index.json``, or while
    a changed recipe is regenerated, the newest ``versions/`` entry, whose shards stay until the
    new run publishes), or of version ``version`` (each top-up is a version)."""
    if version is None:
        index = (latest_publication(folder) or (None,))[0]
    else:
        index = read_index(folder, version)
    if index is None:
        which = "index.json" if version is None else f"version {version}"
        have = sorted(p.name for p in (Path(folder) / VERSIONS).glob("v*"))
        raise FileNotFoundError(
            f"{folder}: no {which} here (versions on disk: {', '.join(have) or 'none'})"
        )
    listed = index.get("shards")
    if not isinstance(listed, list) or not all(
        isinstance(e, dict) and "shard" in e for e in listed
    ):
        raise ValueError(f"{folder}/index.json: not a fairsynth index (no 'shards' list)")
    if not listed:
        raise FileNotFoundError(f"{folder}: its index lists no shards (nothing was accepted)")
    return [str(Path(folder) / e["shard"]) for e in listed]


def expand_sources(
    sources: str | Path | Sequence[str | Path], version: int | None = None
) -> list[str]:
    """Shard URLs of one source or a list: brace notation expanded, folders listed (a fairsynth
    output folder: the shards of its latest publication, or of ``version``)."""
    if isinstance(sources, str | Path):
        sources = [sources]
    urls: list[str] = []
    for source in sources:
        text = str(source)
        local = "://" not in text and not text.startswith("pipe:")
        if version is not None and not (local and Path(text).is_dir()):
            raise ValueError(f"{text}: a version is read from a fairsynth output folder only")
        if local and (version is not None or latest_publication(text) is not None):
            urls.extend(published_shards(text, version))
        elif local and Path(text).is_dir():
            shards = sorted(str(p) for p in Path(text).glob("*.tar"))
            if not shards:
                raise FileNotFoundError(f"{text}: no .tar shards in this folder")
            urls.extend(shards)
        else:
            urls.extend(wds.shardlists.expand_urls(text))
    return urls


class Feed(IterableDataset):
    """Synthetic shards, optionally mixed with reference shards, as decoded labelled samples.

    ``attributes``: {name: [classes]} fixing the label indices (default: the toy world's).
    ``reference_keys``: if given, only these reference samples (e.g. a subset) are fed.
    ``version``: a fairsynth output folder's publication to read (default: the latest; a top-up
    over a grown reference adds a version, whose shards include every earlier one's).
    ``shuffle``: sample shuffle buffer (0: none; shards then keep their order too).
    ``on_error``: a sample that cannot be read (corrupt PNG, no ``.json``) is ``skip``-ped with
    a warning naming its shard and key (counted in ``skipped``, across DataLoader workers) or
    ``raise``-s a ValueError naming them.
    Multi-worker loading splits the shards among the DataLoader's workers.
    """

    def __init__(
        self,
        synthetic: str | Path | Sequence[str | Path] | None,
        reference: str | Path | Sequence[str | Path] | None = None,
        attributes: dict[str, Sequence[str]] | None = None,
        *,
        shuffle: int = 1000,
        seed: int = 0,
        reference_keys: Collection[str] | None = None,
        on_error: str = "skip",
        version: int | None = None,
    ):
        super().__init__()
        if on_error not in ("skip", "raise"):
            raise ValueError(f"on_error: must be 'skip' or 'raise', got {on_error!r}")
        self.on_error = on_error
        self._skipped = multiprocessing.Value("i", 0)  # shared with forked DataLoader workers
        if attributes is None:
            from fairsynth.core import plugins

            attributes = plugins.provided("attributes")  # the installed world's (toy faces)
        self.attributes = {k: tuple(v) for k, v in attributes.items()}
        self.synthetic_urls = expand_sources(synthetic, version) if synthetic is not None else []
        self.reference_urls = expand_sources(reference) if reference is not None else []
        if not self.synthetic_urls and not self.reference_urls:
            raise ValueError("a feed needs synthetic shards, reference shards, or both")
        self.reference_keys = frozenset(reference_keys) if reference_keys is not None else None
        self._synthetic_set = frozenset(self.synthetic_urls)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle for ``epoch`` (call before iterating; workers get it with the dataset)."""
        self.epoch = epoch

    def pipeline(self) -> wds.WebDataset:
        urls = self.synthetic_urls + self.reference_urls
        seed = self.seed * 100_003 + self.epoch
        ds = wds.WebDataset(
            urls, shardshuffle=len(urls) if self.shuffle else False, detshuffle=True,
            seed=seed, empty_check=False, nodesplitter=wds.split_by_node,
        )  # fmt: skip
        ds.append(self._guarded(self._select))
        if self.shuffle:
            ds.append(wds.filters.detshuffle(self.shuffle, min(100, self.shuffle), seed))
        ds.append(self._guarded(self._decode))
        return ds

    @property
    def skipped(self) -> int:
        """Unreadable samples skipped so far (all workers)."""
        return int(self._skipped.value) if self._skipped is not None else 0

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_skipped"] = None  # a shared counter only passes to forked workers
        return state

    def _select(self, sample: dict) -> dict | None:
        return sample if self._wanted(sample) else None

    def _guarded(self, fn):
        """A pipeline stage applying ``fn`` per sample (None drops it), with ``on_error``."""

        def stage(source):
            for sample in source:
                try:
                    out = fn(sample)
                except Exception as exc:
                    where = f"{sample.get('__url__')}: sample {sample.get('__key__')!r}"
                    why = f"{type(exc).__name__}: {str(exc)[:200]}"
                    if self.on_error == "raise":
                        raise ValueError(f"{where} cannot be read ({why})") from exc
                    # stderr, not warnings: DataLoader workers' warnings never reach the caller
                    print(f"fairsynth: warning: {where} skipped: cannot be read ({why})",
                          file=sys.stderr, flush=True)  # fmt: skip
                    if self._skipped is not None:
                        with self._skipped.get_lock():
                            self._skipped.value += 1
                    continue
                if out is not None:
                    yield out

        return stage

    def __iter__(self) -> Iterator[dict]:
        return iter(self.pipeline())

    def _wanted(self, sample: dict) -> bool:
        if self._is_synthetic(sample):
            return bool(json.loads(sample["json"]).get("accepted", True))
        return self.reference_keys is None or sample["__key__"] in self.reference_keys

    def _is_synthetic(self, sample: dict) -> bool:
        return sample["__url__"] in self._synthetic_set

    def _decode(self, sample: dict) -> dict:
        meta = json.loads(sample["json"])
        image = decode_png(sample["png"])
        labels = {}
        for name, classes in self.attributes.items():
            value = meta.get(name)
            labels[name] = classes.index(value) if value in classes else -1
        return {
            "__key__": sample["__key__"],
            "image": torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255.0,
            "labels": {k: torch.tensor(v) for k, v in labels.items()},
            "synthetic": torch.tensor(self._is_synthetic(sample)),
        }


def make_loader(feed: Feed, batch_size: int = 64, num_workers: int = 0, **kwargs) -> DataLoader:
    """A torch DataLoader over the feed (batches of dicts; keys as a list of strings)."""
    return DataLoader(
        feed, batch_size=batch_size, num_workers=num_workers,
        persistent_workers=False, **kwargs,
    )  # fmt: skip
