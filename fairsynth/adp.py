"""The Attribute Distribution Predictor: h_t (+ timestep) -> per-attribute class probabilities.

Trained on h_t recorded along sampling trajectories of the base model, labelled by the
pseudo-labeller on the finished images (``record_trajectories`` + ``train_adp``). Saved as
safetensors + a JSON config.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from fairsynth.attributes import AttributeSpace
from fairsynth.diffusion_model import DiffusionModel
from fairsynth.sampling import batch_generator, to_uint8


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs.to(t.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ADP(nn.Module):
    """Small conv + MLP over h_t, FiLM-conditioned on the timestep, one head per attribute."""

    def __init__(
        self,
        in_channels: int,
        spatial: int,
        heads: dict[str, int],
        width: int = 64,
        hidden: int = 256,
        t_dim: int = 64,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.config = dict(
            in_channels=in_channels,
            spatial=spatial,
            heads=dict(heads),
            width=width,
            hidden=hidden,
            t_dim=t_dim,
            dropout=dropout,
        )
        groups = math.gcd(8, in_channels)
        self.reduce = nn.Sequential(
            nn.GroupNorm(groups, in_channels),
            nn.Conv2d(in_channels, width, 1),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2 if spatial > 4 else 1, padding=1),
            nn.SiLU(),
        )
        out_spatial = (spatial + 1) // 2 if spatial > 4 else spatial
        self.fc = nn.Linear(width * out_spatial * out_spatial, hidden)
        self.t_mlp = nn.Sequential(
            nn.Linear(t_dim, hidden), nn.SiLU(), nn.Linear(hidden, 2 * hidden)
        )
        self.body = nn.Sequential(
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
        )
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in heads.items()})
        self.t_dim = t_dim

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        if t.ndim == 0:
            t = t.expand(h.shape[0])
        x = self.fc(self.reduce(h.float()).flatten(1))
        scale, shift = self.t_mlp(timestep_embedding(t, self.t_dim)).chunk(2, dim=-1)
        x = self.body(x * (1 + scale) + shift)
        return {k: head(x) for k, head in self.heads.items()}


ADP_FILES = ("adp.json", "adp.safetensors")


@dataclass
class TrainedADP:
    """An ADP with its attribute space and provenance (what the pipeline loads)."""

    model: ADP
    space: AttributeSpace
    meta: dict
    order: dict[str, list[int]] | None = None  # per attribute: head columns in ``space`` order

    def aligned(self, space: AttributeSpace) -> TrainedADP:
        """This ADP with its heads' classes in ``space``'s order, matched by name (a params file
        may list ``[dark, light]`` for an ADP trained on ``[light, dark]``). Unknown or renamed
        classes are a ValueError naming both lists."""
        order = space.order_from(self.space.as_dict(), "ADP")
        ours = tuple((n, space.classes(n) if n in order else c) for n, c in self.space.attributes)
        return TrainedADP(self.model, AttributeSpace(ours), self.meta, order)

    def joint_probs(
        self, h: torch.Tensor, t: torch.Tensor, names: tuple[str, ...], temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-sample probabilities over the cells of ``names`` (product of per-attribute heads)."""
        logits = self.model(h, t)
        out = None
        for name in names:
            z = (
                logits[name]
                if not self.order or name not in self.order
                else logits[name][:, self.order[name]]
            )
            p = torch.softmax(z / temperature, dim=-1)
            out = p if out is None else (out[:, :, None] * p[:, None, :]).flatten(1)
        assert out is not None
        return out

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.model.state_dict().items()},
            path / "adp.safetensors",
        )
        config = {"model": self.model.config, "attributes": self.space.as_dict(), **self.meta}
        (path / "adp.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> TrainedADP:
        path = Path(path)
        for f in ADP_FILES:
            if not (path / f).is_file():
                raise FileNotFoundError(f"ADP folder {path} is missing {f}")
        config = json.loads((path / "adp.json").read_text())
        model = ADP(**config.pop("model"))
        model.load_state_dict(load_file(path / "adp.safetensors"))
        model.eval().requires_grad_(False)
        space = AttributeSpace.from_dict(config.pop("attributes"))
        return cls(model, space, config)


@dataclass
class Trajectories:
    h: torch.Tensor  # (n_traj, n_rec, C, H, W) float16
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
    def load(cls, path: str | Path) -> Trajectories:
        t = load_file(str(path))
        labels = {k[len("label_") :]: v.numpy() for k, v in t.items() if k.startswith("label_")}
        return cls(t["h"], t["timesteps"], labels, t["images"].numpy())


def record_trajectories(
    model: DiffusionModel,
    pseudo_labeller: Callable[[np.ndarray], dict[str, np.ndarray]],
    n: int,
    seed: int,
    steps: int = 50,
    record_every: int = 2,
    batch_size: int = 64,
    layer: str = "mid_block",
    progress: bool = False,
    eta: float = 0.0,
    sampler: Callable | None = None,
) -> Trajectories:
    """Sample ``n`` unguided trajectories, recording h every ``record_every`` steps.

    ``sampler(n, generator, callback) -> images`` replaces the default DDIM loop over ``model``
    (the text-to-image backend passes its prompt-bound loop); the callback's ``StepInfo.h`` is
    what gets recorded."""
    hs, images = [], []
    batches = range((n + batch_size - 1) // batch_size)
    if progress:
        from tqdm import tqdm

        batches = tqdm(batches, desc="recording h_t", unit="batch")
    timesteps: list[int] = []
    if sampler is None:

        def sampler(size, generator, callback):
            return model.sample(
                size, generator, steps=steps, eta=eta, callback=callback, layer=layer
            )

    for b in batches:
        size = min(batch_size, n - b * batch_size)
        rec: list[torch.Tensor] = []
        ts: list[int] = []

        def keep(info, rec=rec, ts=ts):
            if info.index % record_every == 0:
                rec.append(info.h.detach().to(torch.float16).cpu())
                ts.append(info.timestep)

        x = sampler(size, batch_generator(seed, b), keep)
        hs.append(torch.stack(rec, dim=1))
        images.append(to_uint8(x))
        timesteps = ts
    imgs = np.concatenate(images)
    probs = pseudo_labeller(imgs)
    labels = {k: v.argmax(1) for k, v in probs.items()}
    return Trajectories(torch.cat(hs), torch.tensor(timesteps), labels, imgs)


def train_adp(
    traj: Trajectories,
    space: AttributeSpace,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-3,
    label_smoothing: float = 0.1,
    holdout: float = 0.15,
    patience: int = 4,
    bands: int = 5,
    width: int = 64,
    hidden: int = 256,
    dropout: float = 0.0,
    weight_decay: float = 1e-4,
    progress: bool = False,
) -> TrainedADP:
    """Train on recorded trajectories, split by trajectory; early stopping on held-out loss."""
    torch.manual_seed(seed)
    n_traj, n_rec = traj.h.shape[:2]
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_traj)
    n_val = max(1, int(round(holdout * n_traj)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    c, s = traj.h.shape[2], traj.h.shape[3]
    heads = {name: len(cl) for name, cl in space.attributes}
    model = ADP(c, s, heads, width=width, hidden=hidden, dropout=dropout)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    labels = {k: torch.as_tensor(v) for k, v in traj.labels.items() if k in space.names}

    def flat(idx: np.ndarray):
        pairs = np.stack(np.meshgrid(idx, np.arange(n_rec), indexing="ij"), -1).reshape(-1, 2)
        return pairs

    train_pairs, val_pairs = flat(train_idx), flat(val_idx)

    def batch_loss(pairs: np.ndarray, smoothing: float):
        h = traj.h[pairs[:, 0], pairs[:, 1]].float()
        t = traj.timesteps[pairs[:, 1]]
        logits = model(h, t)
        loss = sum(
            F.cross_entropy(logits[k], labels[k][pairs[:, 0]], label_smoothing=smoothing)
            for k in labels
        )
        return loss, logits

    best, best_state, bad, history = float("inf"), None, 0, []
    epoch_iter = range(epochs)
    if progress:
        from tqdm import tqdm

        epoch_iter = tqdm(epoch_iter, desc="training ADP", unit="epoch")
    for _epoch in epoch_iter:
        model.train()
        perm = rng.permutation(len(train_pairs))
        for i in range(0, len(perm), batch_size):
            loss, _ = batch_loss(train_pairs[perm[i : i + batch_size]], label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val = sum(
                float(batch_loss(val_pairs[i : i + 2048], 0.0)[0]) * len(val_pairs[i : i + 2048])
                for i in range(0, len(val_pairs), 2048)
            ) / len(val_pairs)
        history.append(round(val, 5))
        if val < best - 1e-4:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval().requires_grad_(False)
    accuracy = heldout_accuracy(model, traj, val_pairs, labels, bands)
    meta = {
        "trajectories": int(n_traj),
        "recorded_steps": int(n_rec),
        "heldout_trajectories": int(n_val),
        "epochs_run": len(history),
        "val_loss_history": history,
        "label_smoothing": label_smoothing,
        "lr": lr,
        "dropout": dropout,
        "weight_decay": weight_decay,
        "heldout_accuracy_by_band": accuracy,
        "label_fractions": {
            k: np.bincount(v.numpy(), minlength=len(space.classes(k))).tolist()
            for k, v in labels.items()
        },
    }
    return TrainedADP(model, space, meta)


@torch.no_grad()
def heldout_accuracy(
    model: ADP, traj: Trajectories, pairs: np.ndarray, labels, bands: int
) -> list[dict]:
    """Accuracy per attribute in ``bands`` equal bands of the timestep range (noisiest first)."""
    ts = traj.timesteps[pairs[:, 1]].numpy()
    edges = np.linspace(0, 1000, bands + 1)
    preds: dict[str, list[np.ndarray]] = {k: [] for k in labels}
    for i in range(0, len(pairs), 2048):
        p = pairs[i : i + 2048]
        logits = model(traj.h[p[:, 0], p[:, 1]].float(), traj.timesteps[p[:, 1]])
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
