"""h_t trajectories: unguided samples with h recorded along the way and the final images
pseudo-labelled, the ADP's training data."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from fairsynth.diffusion.sampling import (
    Backend,
    SamplerSettings,
    batch_generator,
    sample,
    to_uint8,
)
from fairsynth.guidance.trajectory_store import HStore, TrajectoryWriter, read_store


@dataclass
class Trajectories:
    h: torch.Tensor | HStore  # (n_traj, n_rec, C, H, W) float16, in memory or on disk
    timesteps: torch.Tensor  # (n_rec,)
    labels: dict[str, np.ndarray]  # per attribute, (n_traj,) class index from the pseudo-labeller
    images: np.ndarray  # (n_traj, H, W, 3) uint8 final images

    def save(self, path: str | Path) -> None:
        """One safetensors file, so a recording can be reused (ADP experiments, retraining)."""
        tensors = {"h": self.h.contiguous(), "timesteps": self.timesteps.contiguous(),
                   "images": torch.from_numpy(np.ascontiguousarray(self.images))}  # fmt: skip
        tensors.update(
            {f"label_{k}": torch.from_numpy(v.astype(np.int64)) for k, v in self.labels.items()}
        )
        save_file(tensors, str(path))

    @classmethod
    def open(cls, folder: str | Path) -> Trajectories:
        """A store written by ``TrajectoryWriter`` (``stream_trajectories``), read from disk."""
        return cls(*read_store(folder))

    @classmethod
    def load(cls, path: str | Path) -> Trajectories:
        t = load_file(str(path))
        labels = {k[len("label_") :]: v.numpy() for k, v in t.items() if k.startswith("label_")}
        return cls(t["h"], t["timesteps"], labels, t["images"].numpy())


@dataclass(frozen=True)
class Recording:
    """How trajectories are recorded: sampled with ``settings`` in batches of ``batch_size``,
    h kept every ``record_every`` steps."""

    settings: SamplerSettings = SamplerSettings()
    record_every: int = 2
    batch_size: int = 64
    progress: bool = False


def labelled(probs: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Which samples the pseudo-labeller labelled (it gives a sample it cannot label NaN
    probabilities: never trained on, not even as class 0), and their labels."""
    keep = np.all([np.isfinite(p).all(axis=1) for p in probs.values()], axis=0)
    return keep, {k: p[keep].argmax(1) for k, p in probs.items()}


def record_trajectories(
    backend: Backend,
    pseudo_labeller: Callable[[np.ndarray], dict[str, np.ndarray]],
    n: int,
    seed: int,
    recording: Recording = Recording(),
) -> Trajectories:
    """Sample ``n`` unguided trajectories with ``backend``, recording h (``StepInfo.h``, the
    output of ``settings.layer``) every ``record_every`` steps, and pseudo-label the images.
    Held in memory: ``stream_trajectories`` writes them to disk instead."""
    hs, images, timesteps = [], [], []
    for h, ts, imgs in recorded_batches(backend, n, seed, recording):
        hs.append(h)
        images.append(imgs)
        timesteps = ts
    h, imgs = torch.cat(hs), np.concatenate(images)
    keep, labels = labelled(pseudo_labeller(imgs))
    return Trajectories(h[torch.from_numpy(keep)], torch.tensor(timesteps), labels, imgs[keep])


def stream_trajectories(
    writer: TrajectoryWriter,
    backend: Backend,
    pseudo_labeller: Callable[[np.ndarray], dict[str, np.ndarray]],
    n: int,
    seed: int,
    recording: Recording = Recording(),
) -> None:
    """``record_trajectories``, each batch pseudo-labelled and appended to ``writer`` as it
    comes: memory holds one batch, whatever ``n``."""
    for h, ts, imgs in recorded_batches(backend, n, seed, recording):
        keep, labels = labelled(pseudo_labeller(imgs))
        if not keep.any():
            continue
        if not keep.all():
            h, imgs = h[torch.from_numpy(keep)], imgs[keep]
        writer.append(h, ts, imgs, labels)


def recorded_batches(
    backend: Backend, n: int, seed: int, recording: Recording = Recording()
) -> Iterator[tuple[torch.Tensor, list[int], np.ndarray]]:
    """Per batch: h (size, n_rec, C, H, W) float16 on the CPU, the recorded timesteps and the
    images. h stays on the model's device until the batch is done: one copy back per batch."""
    settings, record_every = recording.settings, recording.record_every
    batch_size, progress = recording.batch_size, recording.progress
    batches = range((n + batch_size - 1) // batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="recording h_t", unit="batch")
    for b in batches:
        size = min(batch_size, n - b * batch_size)
        rec: list[torch.Tensor] = []
        ts: list[int] = []

        def keep(info, rec=rec, ts=ts):
            if info.index % record_every == 0:
                rec.append(info.h.detach().to(torch.float16, copy=True))
                ts.append(info.timestep)

        x = sample(backend, size, batch_generator(seed, b), settings, callback=keep)
        yield torch.stack(rec, dim=1).cpu(), ts, to_uint8(x)
