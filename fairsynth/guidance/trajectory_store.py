"""h_t trajectories on disk, so ADP training data never has to fit in memory.

A store is a folder: ``h.f16`` (raw float16, C order, shape (n_traj, n_rec, C, H, W)),
``images.u8`` (raw uint8, (n_traj, H, W, 3)), ``labels.safetensors`` (per attribute, one class
index per trajectory, and the recorded timesteps) and ``store.json`` (the shapes), written last,
so a store without it is an unfinished recording. Rows are read with ``os.pread`` (no memory
map, whose touched pages would count as the reader's resident memory): reading any rows costs
memory for those rows only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

INDEX = "store.json"


class HStore:
    """Read access to the h rows of a store: ``shape``, ``len()``, ``store[traj_idx, rec_idx]``
    (index arrays, as with a tensor) -> float16 tensor, and ``to_tensor()``."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = Path(path), tuple(shape)
        self.dtype = torch.float16
        self._row = int(np.prod(self.shape[2:]))
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> torch.Tensor:
        traj, rec = (np.asarray(i, dtype=np.int64).reshape(-1) for i in index)
        flat = traj * self.shape[1] + rec
        out = np.empty((len(flat), self._row), dtype=np.float16)
        nbytes = self._row * 2
        for k, row in enumerate(flat.tolist()):
            out[k] = np.frombuffer(os.pread(self._fd, nbytes, row * nbytes), dtype=np.float16)
        return torch.from_numpy(out).reshape(len(flat), *self.shape[2:])

    def to_tensor(self) -> torch.Tensor:
        data = np.fromfile(self.path, dtype=np.float16)
        return torch.from_numpy(data).reshape(self.shape)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __del__(self) -> None:
        try:
            self.close()
        except (OSError, AttributeError):
            pass


class TrajectoryWriter:
    """Appends recorded batches to a store folder; ``finish`` writes the labels and the index."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / INDEX).unlink(missing_ok=True)
        self._h = open(self.folder / "h.f16", "wb")  # noqa: SIM115 - closed in finish
        self._images = open(self.folder / "images.u8", "wb")  # noqa: SIM115
        self.n = 0
        self.row_shape: tuple[int, ...] | None = None
        self.image_shape: tuple[int, ...] | None = None
        self.timesteps: list[int] | None = None
        self.labels: dict[str, list[np.ndarray]] = {}

    def append(
        self, h: torch.Tensor, timesteps: list[int], images: np.ndarray, labels: dict
    ) -> None:
        """One batch: h (n, n_rec, C, H, W), its recorded timesteps, images and class indices."""
        if self.timesteps is None:
            self.timesteps, self.row_shape = list(timesteps), tuple(h.shape[1:])
            self.image_shape = tuple(images.shape[1:])
        elif list(timesteps) != self.timesteps or tuple(h.shape[1:]) != self.row_shape:
            raise ValueError("trajectories recorded at different timesteps cannot be joined")
        self._h.write(h.to(torch.float16).contiguous().numpy().tobytes())
        self._images.write(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
        for k, v in labels.items():
            self.labels.setdefault(k, []).append(np.asarray(v, dtype=np.int64))
        self.n += len(h)

    def close(self) -> None:
        """Close the files (``finish`` does; call it alone to abandon an unfinished store)."""
        self._h.close()
        self._images.close()

    def finish(self) -> None:
        self.close()
        if self.timesteps is None:
            raise ValueError("no trajectories were recorded")
        tensors = {
            f"label_{k}": torch.from_numpy(np.concatenate(v)) for k, v in self.labels.items()
        }
        tensors["timesteps"] = torch.tensor(self.timesteps)
        save_file(tensors, str(self.folder / "labels.safetensors"))
        index = {"n": self.n, "row_shape": list(self.row_shape),
                 "image_shape": list(self.image_shape)}  # fmt: skip
        (self.folder / INDEX).write_text(json.dumps(index))


def is_store(path: str | Path) -> bool:
    return (Path(path) / INDEX).is_file()


def read_store(folder: str | Path) -> tuple[HStore, torch.Tensor, dict, np.ndarray]:
    """A finished store: h as an ``HStore`` (rows read on demand), the timesteps, the labels
    and the images (a read-only memory map: they stay on disk too)."""
    folder = Path(folder)
    if not is_store(folder):
        raise FileNotFoundError(f"{folder} is not a finished trajectory store (no {INDEX})")
    index = json.loads((folder / INDEX).read_text())
    n, row = int(index["n"]), tuple(index["row_shape"])
    t = load_file(str(folder / "labels.safetensors"))
    labels = {k[len("label_") :]: v.numpy() for k, v in t.items() if k.startswith("label_")}
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r",
                       shape=(n, *index["image_shape"]))  # fmt: skip
    return HStore(folder / "h.f16", (n, *row)), t["timesteps"], labels, images
