"""Training the ADP on recorded trajectories (in memory or streamed from a store on disk,
``trajectory_store``): rows come through a DataLoader in batches of (trajectory, recorded step)
pairs, so memory holds one batch of h rows, whatever the number of trajectories."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from fairsynth.core.attributes import AttributeSpace
from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP, input_shape
from fairsynth.guidance.class_means import cell_means
from fairsynth.guidance.trajectories import Trajectories


@dataclass(frozen=True)
class ADPTraining:
    """How the ADP learns: AdamW (``lr``, ``weight_decay``) on label-smoothed cross-entropy,
    ``batch_size`` rows a step, early stopping after ``patience`` epochs without a better
    held-out loss (``holdout``: the fraction of trajectories held out); the net's ``width``,
    ``hidden`` and ``dropout``; held-out accuracy reported in ``bands`` timestep bands."""

    seed: int = 0
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    label_smoothing: float = 0.1
    holdout: float = 0.15
    patience: int = 4
    bands: int = 5
    width: int = 64
    hidden: int = 256
    dropout: float = 0.0
    weight_decay: float = 1e-4


def train_adp(
    traj: Trajectories,
    space: AttributeSpace,
    training: ADPTraining = ADPTraining(),
    progress: bool = False,
) -> TrainedADP:
    """Train on recorded trajectories, split by trajectory; early stopping on held-out loss."""
    cfg = training
    torch.manual_seed(cfg.seed)
    n_traj, n_rec = traj.h.shape[:2]
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(n_traj)
    n_val = max(1, int(round(cfg.holdout * n_traj)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    c, s, tokens = input_shape(tuple(traj.h.shape[2:]))
    heads = {name: len(cl) for name, cl in space.attributes}
    shape = ADPShape(width=cfg.width, hidden=cfg.hidden, dropout=cfg.dropout, tokens=tokens)
    model = ADP(c, s, heads, shape)
    labels = {k: torch.as_tensor(v) for k, v in traj.labels.items() if k in space.names}
    val_pairs = _pairs(val_idx, n_rec)
    fit = _Fit(model, traj, labels, cfg)
    history = fit.run(_pairs(train_idx, n_rec), val_pairs, rng, progress)
    accuracy = heldout_accuracy(model, traj, val_pairs, labels, cfg.bands)
    meta = {
        "trajectories": int(n_traj),
        "recorded_steps": int(n_rec),
        "heldout_trajectories": int(n_val),
        "epochs_run": len(history),
        "val_loss_history": history,
        "label_smoothing": cfg.label_smoothing,
        "lr": cfg.lr,
        "dropout": cfg.dropout,
        "weight_decay": cfg.weight_decay,
        "heldout_accuracy_by_band": accuracy,
        "class_means_trajectories": int(n_traj),
        "label_fractions": {
            k: np.bincount(v.numpy(), minlength=len(space.classes(k))).tolist()
            for k, v in labels.items()
        },
    }
    # on the trajectories the ADP learnt from, train and held-out split alike (guidance.shift)
    means = cell_means(traj.h, traj.labels, space.attributes, traj.timesteps)
    return TrainedADP(model, space, meta, None, means)


def _pairs(idx: np.ndarray, n_rec: int) -> np.ndarray:
    """Every (trajectory, recorded step) pair of the trajectories ``idx``."""
    return np.stack(np.meshgrid(idx, np.arange(n_rec), indexing="ij"), -1).reshape(-1, 2)


class _Fit:
    """The training loop: epochs over shuffled row batches, the best held-out state kept."""

    def __init__(self, model: ADP, traj: Trajectories, labels: dict, cfg: ADPTraining):
        self.model, self.traj, self.labels, self.cfg = model, traj, labels, cfg
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

    def loss(self, pairs: np.ndarray, h: torch.Tensor, smoothing: float) -> torch.Tensor:
        logits = self.model(h.float(), self.traj.timesteps[pairs[:, 1]])
        return sum(
            F.cross_entropy(logits[k], self.labels[k][pairs[:, 0]], label_smoothing=smoothing)
            for k in self.labels
        )

    def run(self, train_pairs, val_pairs, rng, progress: bool) -> list[float]:
        """Train; the model ends in its best held-out state (eval, frozen). The held-out losses."""
        cfg, model = self.cfg, self.model
        best, best_state, bad, history = float("inf"), None, 0, []
        epoch_iter = range(cfg.epochs)
        if progress:
            from tqdm import tqdm

            epoch_iter = tqdm(epoch_iter, desc="training ADP", unit="epoch")
        for _epoch in epoch_iter:
            model.train()
            perm = rng.permutation(len(train_pairs))
            size = cfg.batch_size
            batches = [perm[i : i + size] for i in range(0, len(perm), size)]
            for pairs, h in rows(self.traj, train_pairs, batches):
                loss = self.loss(pairs, h, cfg.label_smoothing)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            model.eval()
            with torch.no_grad():
                val = sum(
                    float(self.loss(pairs, h, 0.0)) * len(pairs)
                    for pairs, h in rows(self.traj, val_pairs, in_order(len(val_pairs), 2048))
                ) / len(val_pairs)
            history.append(round(val, 5))
            if val < best - 1e-4:
                best, bad = val, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        assert best_state is not None
        model.load_state_dict(best_state)
        model.eval().requires_grad_(False)
        return history


@torch.no_grad()
def heldout_accuracy(
    model: ADP, traj: Trajectories, pairs: np.ndarray, labels, bands: int
) -> list[dict]:
    """Accuracy per attribute in ``bands`` equal bands of the timestep range (noisiest first)."""
    ts = traj.timesteps[pairs[:, 1]].numpy()
    edges = np.linspace(0, 1000, bands + 1)
    preds: dict[str, list[np.ndarray]] = {k: [] for k in labels}
    for p, h in rows(traj, pairs, in_order(len(pairs), 2048)):
        logits = model(h.float(), traj.timesteps[p[:, 1]])
        for k in labels:
            preds[k].append(logits[k].argmax(1).numpy())
    out = []
    for lo, hi in reversed(list(zip(edges[:-1], edges[1:], strict=True))):
        m = (ts >= lo) & (ts < hi)
        if not m.any():
            continue
        row = {"t_from": int(hi), "t_to": int(lo), "n": int(m.sum())}
        for k in labels:
            pk = np.concatenate(preds[k])
            row[k] = round(float((pk[m] == labels[k].numpy()[pairs[m, 0]]).mean()), 4)
        out.append(row)
    return out


class _Rows(Dataset):
    """(trajectory, recorded step) pairs -> their h rows, fetched a batch at a time."""

    def __init__(self, h, pairs: np.ndarray):
        self.h, self.pairs = h, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitems__(self, index) -> tuple[np.ndarray, torch.Tensor]:
        pairs = self.pairs[np.asarray(index)]
        return pairs, self.h[pairs[:, 0], pairs[:, 1]]


def rows(traj: Trajectories, pairs: np.ndarray, batches: list[np.ndarray]) -> DataLoader:
    """A DataLoader over ``pairs`` in the given batches: (pairs, h float16) per batch. Its own
    generator: each new iterator draws a base seed, which from the global generator would shift
    the dropout masks (and change the trained ADP)."""
    return DataLoader(_Rows(traj.h, pairs), batch_sampler=batches, collate_fn=_as_is,
                      generator=torch.Generator())  # fmt: skip


def in_order(n: int, size: int) -> list[np.ndarray]:
    return [np.arange(i, min(i + size, n)) for i in range(0, n, size)]


def _as_is(batch):
    return batch
