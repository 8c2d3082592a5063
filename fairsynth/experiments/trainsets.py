"""The downstream experiment's training sets, in memory, and how batches are drawn from them.

Every training set is read once through ``fairsynth.data.feed`` (as a user would read it) into
uint8 tensors; the hundreds of runs of the experiment then draw their batches from memory, so
no run scans the reference shards again. Batches are drawn by torch samplers: uniformly
(``RandomSampler``) or group-balanced (``WeightedRandomSampler``, each sensitive x label cell
equally often); the group-reweighted loss weights each sample by its cell's inverse frequency.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import RandomSampler, WeightedRandomSampler

from fairsynth.data.feed import Feed, make_loader


@dataclass(frozen=True)
class TrainSet:
    images: torch.Tensor  # uint8 NCHW
    label: torch.Tensor  # int64 class index of the classifier's label
    sensitive: torch.Tensor  # int64 group index
    synthetic: torch.Tensor  # bool

    def __len__(self) -> int:
        return len(self.label)

    def __add__(self, other: TrainSet) -> TrainSet:
        return TrainSet(
            *(torch.cat([a, b]) for a, b in zip(self.parts(), other.parts(), strict=True))
        )

    def parts(self) -> tuple[torch.Tensor, ...]:
        return (self.images, self.label, self.sensitive, self.synthetic)

    def cells(self, n_labels: int) -> torch.Tensor:
        """Each sample's (sensitive, label) cell."""
        return self.sensitive * n_labels + self.label

    def with_label_noise(self, fraction: float, n_labels: int, seed: int) -> TrainSet:
        """A copy with ``fraction`` of the labels (drawn with ``seed``) set to another class."""
        if fraction <= 0:
            return self
        rng = np.random.default_rng(seed)
        n = len(self)
        flip = rng.choice(n, size=int(round(fraction * n)), replace=False)
        shift = rng.integers(1, n_labels, size=len(flip))  # another class, never the same
        label = self.label.clone()
        label[flip] = (label[flip] + torch.from_numpy(shift)) % n_labels
        return TrainSet(self.images, label, self.sensitive, self.synthetic)


def read_train_set(
    synthetic: str | Path | None,
    reference: str | Path | None,
    attributes: dict[str, Sequence[str]],
    label: str,
    sensitive: str,
    reference_keys: Collection[str] | None = None,
) -> TrainSet:
    """Samples of the sources (through the feed, every read checked) with both labels known."""
    feed = Feed(
        synthetic, reference=reference, attributes=attributes, shuffle=0,
        reference_keys=reference_keys, on_error="raise",
    )  # fmt: skip
    parts: dict[str, list[torch.Tensor]] = {"images": [], "label": [], "sensitive": [], "syn": []}
    for batch in make_loader(feed, batch_size=256):
        parts["images"].append((batch["image"] * 255).round().to(torch.uint8))
        parts["label"].append(batch["labels"][label])
        parts["sensitive"].append(batch["labels"][sensitive])
        parts["syn"].append(batch["synthetic"])
    cat = {k: torch.cat(v) for k, v in parts.items()}
    known = (cat["label"] >= 0) & (cat["sensitive"] >= 0)  # unlabelled samples cannot train
    return TrainSet(cat["images"][known], cat["label"][known], cat["sensitive"][known],
                    cat["syn"][known])  # fmt: skip


def batches(
    data: TrainSet, steps: int, batch_size: int, n_labels: int, balanced: bool, seed: int
) -> Iterator[torch.Tensor]:
    """``steps`` batches of indices: uniform, or each (sensitive, label) cell equally often."""
    gen = torch.Generator().manual_seed(seed)
    total = steps * batch_size
    if balanced:
        cells = data.cells(n_labels)
        counts = torch.bincount(cells).double()
        sampler = WeightedRandomSampler((1.0 / counts)[cells], total, replacement=True,
                                        generator=gen)  # fmt: skip
    else:
        sampler = RandomSampler(range(len(data)), num_samples=total, generator=gen)
    order = torch.as_tensor(list(sampler))
    yield from order.split(batch_size)


def inverse_cell_weights(data: TrainSet, n_labels: int) -> torch.Tensor:
    """Per-sample loss weights: the inverse of the sample's cell frequency, mean 1."""
    cells = data.cells(n_labels)
    counts = torch.bincount(cells).float()
    present = int((counts > 0).sum())
    return (len(data) / (present * counts))[cells]
