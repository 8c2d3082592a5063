"""Class means of h_t: per attribute, class and recorded timestep, the mean h of the training
trajectories whose finished image the pseudo-labeller put in that class.

The ADP's gradient points where the ADP's reading changes fastest, which need not be where the
decoder changes the image: on the toy text-to-image model a trust-region step along it moves
a doctor batch from 4 % to 37 % dark skin, while adding the dark-minus-light class mean at every
step moves it to 50 % with every face still clear. The difference of class means is a direction
the model's own samples take between the classes, so a shift along it stays on their manifold.
``guidance.shift`` adds it, per sample, in the amount the transport plan asks of that sample.
"""

from __future__ import annotations

import numpy as np
import torch

from fairsynth.core.attributes import AttributeSpace

ClassMeans = dict[str, torch.Tensor]  # attribute -> (classes, recorded steps, *h shape)


def class_means(
    h, labels: dict[str, np.ndarray], space: AttributeSpace, chunk: int = 64
) -> ClassMeans:
    """Means over trajectories ``h`` (n_traj, n_rec, *shape; a tensor or an on-disk store read
    ``chunk`` trajectories at a time) by each attribute's ``labels``; a class no trajectory
    fell in gets the overall mean (no shift toward it or away from it)."""
    n_traj = len(h)
    sums = {n: None for n in space.names}
    total = None
    for start in range(0, n_traj, chunk):
        rows = _trajectories(h, start, min(n_traj, start + chunk)).float()
        total = rows.sum(0) if total is None else total + rows.sum(0)
        for name, classes in space.attributes:
            onehot = torch.zeros(len(rows), len(classes))
            picked = np.asarray(labels[name][start : start + chunk], dtype=np.int64)
            onehot[torch.arange(len(rows)), torch.from_numpy(picked)] = 1
            part = torch.einsum("nc,nr...->cr...", onehot, rows)
            sums[name] = part if sums[name] is None else sums[name] + part
    assert total is not None
    means = {}
    for name, classes in space.attributes:
        counts = np.bincount(np.asarray(labels[name][:n_traj]), minlength=len(classes))
        per = [
            sums[name][c] / counts[c] if counts[c] else total / n_traj for c in range(len(classes))
        ]
        means[name] = torch.stack(per).to(torch.float16)
    return means


def _trajectories(h, start: int, end: int) -> torch.Tensor:
    """Trajectories ``start:end``, all recorded steps, from a tensor or an on-disk store."""
    if isinstance(h, torch.Tensor):
        return h[start:end]
    n_rec = h.shape[1]
    traj, rec = np.meshgrid(np.arange(start, end), np.arange(n_rec), indexing="ij")
    return h[traj.reshape(-1), rec.reshape(-1)].reshape(end - start, n_rec, *h.shape[2:])


def nearest_step(timesteps: torch.Tensor, t: torch.Tensor) -> int:
    """The recorded step whose timestep is nearest ``t``."""
    return int(torch.argmin((timesteps.float() - float(t)).abs()))


def class_shift(
    means: ClassMeans,
    step: int,
    names: tuple[str, ...],
    classes: tuple[int, ...],
    wanted: torch.Tensor,
    probs: torch.Tensor,
) -> torch.Tensor:
    """Per sample, sum over ``names`` of (wanted - predicted class marginal) @ class means at
    recorded step ``step``: how far, along the class means, each sample should move. ``wanted``
    and ``probs`` are (N, cells) over the product of ``names`` (``classes`` per attribute)."""
    diff = (wanted - probs).view(-1, *classes)
    move = None
    for axis, name in enumerate(names):
        others = [d + 1 for d in range(len(names)) if d != axis]
        marginal = diff.sum(dim=others) if others else diff  # sum(dim=[]) sums everything
        mu = means[name][:, step].to(device=diff.device, dtype=torch.float32)
        part = (marginal @ mu.flatten(1)).view(len(diff), *mu.shape[1:])
        move = part if move is None else move + part
    assert move is not None
    return move
