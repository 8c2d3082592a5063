"""The Attribute Distribution Predictor: h_t (+ timestep) -> per-attribute class probabilities.

Trained on h_t recorded along sampling trajectories of the base model, labelled by the
pseudo-labeller on the finished images (``record_trajectories`` + ``train_adp``). Saved as
safetensors + a JSON config.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from fairsynth.core.attributes import AttributeSpace
from fairsynth.core.folders import staged_folder
from fairsynth.guidance.class_means import CellMeans


def embedding_frequencies(dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    half = dim // 2
    return torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)


def timestep_embedding(
    t: torch.Tensor, dim: int, freqs: torch.Tensor | None = None
) -> torch.Tensor:
    freqs = embedding_frequencies(dim) if freqs is None else freqs
    args = t.float()[:, None] * freqs.to(t.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def input_shape(row: tuple[int, ...]) -> tuple[int, int, bool]:
    """(channels, spatial side, tokens) of the ADP for h of shape ``row`` (one sample): a UNet's
    (C, H, W), or a transformer's token sequence (L, D) with L a square (laid back on its grid)."""
    if len(row) == 3 and row[1] == row[2]:
        return int(row[0]), int(row[1]), False
    if len(row) == 2 and math.isqrt(row[0]) ** 2 == row[0]:
        return int(row[1]), math.isqrt(row[0]), True
    raise ValueError(f"h of shape {tuple(row)} is neither (C, S, S) nor (S*S tokens, D)")


def tokens_to_grid(h: torch.Tensor) -> torch.Tensor:
    """(n, S*S, D) tokens in row-major order (SD3's patches, Flux's packed latents) ->
    (n, D, S, S): the conv ADP then reads a transformer's h as it reads a UNet's."""
    n, length, dim = h.shape
    side = math.isqrt(length)
    # contiguous: GroupNorm's CPU backward crashed (segfault, torch 2.13) on the strided view
    return h.transpose(1, 2).reshape(n, dim, side, side).contiguous()


@dataclass(frozen=True)
class ADPShape:
    """The ADP net's size: conv ``width``, MLP ``hidden`` units, timestep embedding ``t_dim``,
    ``dropout``; ``tokens``: h is a transformer's token sequence (laid on its grid first)."""

    width: int = 64
    hidden: int = 256
    t_dim: int = 64
    dropout: float = 0.0
    tokens: bool = False


class ADP(nn.Module):
    """Small conv + MLP over h_t, FiLM-conditioned on the timestep, one head per attribute.
    With ``tokens``, h is a transformer's token sequence, laid back on its 2-D grid first."""

    def __init__(
        self, in_channels: int, spatial: int, heads: dict[str, int], shape: ADPShape = ADPShape()
    ):
        super().__init__()
        width, hidden, t_dim = shape.width, shape.hidden, shape.t_dim
        dropout, tokens = shape.dropout, shape.tokens
        self.config = dict(
            in_channels=in_channels,
            spatial=spatial,
            heads=dict(heads),
            width=width,
            hidden=hidden,
            t_dim=t_dim,
            dropout=dropout,
            **({"tokens": True} if tokens else {}),  # (UNet ADPs keep the config they had)
        )
        self.tokens = tokens
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
        # made once, moved with the module: no per-step allocation or host copy
        self.register_buffer("freqs", embedding_frequencies(t_dim), persistent=False)

    @classmethod
    def from_config(cls, config: dict) -> ADP:
        """The net an ``adp.json`` ``model`` entry describes (``self.config``)."""
        shape = {k: config[k] for k in ADPShape.__dataclass_fields__ if k in config}
        return cls(config["in_channels"], config["spatial"], config["heads"], ADPShape(**shape))

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        if t.ndim == 0:
            t = t.expand(h.shape[0])
        if self.tokens:
            h = tokens_to_grid(h)
        x = self.fc(self.reduce(h.float()).flatten(1))
        emb = timestep_embedding(t.to(self.freqs.device), self.t_dim, self.freqs)
        scale, shift = self.t_mlp(emb).chunk(2, dim=-1)
        x = self.body(x * (1 + scale) + shift)
        return {k: head(x) for k, head in self.heads.items()}


ADP_FILES = ("adp.json", "adp.safetensors")
MEANS_FILE = "class_means.safetensors"  # optional: guidance.shift needs it (class_means.py)


@dataclass
class TrainedADP:
    """An ADP with its attribute space and provenance (what the pipeline loads)."""

    model: ADP
    space: AttributeSpace
    meta: dict
    order: dict[str, list[int]] | None = None  # per attribute: head columns in ``space`` order
    means: CellMeans | None = None  # h per cell and recorded step (guidance.shift)

    def aligned(self, space: AttributeSpace) -> TrainedADP:
        """This ADP with its heads' classes in ``space``'s order, matched by name (a params file
        may list ``[dark, light]`` for an ADP trained on ``[light, dark]``). Unknown or renamed
        classes are a ValueError naming both lists."""
        order = space.order_from(self.space.as_dict(), "ADP")
        ours = tuple((n, space.classes(n) if n in order else c) for n, c in self.space.attributes)
        means = self.means and self.means.reordered([order.get(n) for n in self.space.names])
        return TrainedADP(self.model, AttributeSpace(ours), self.meta, order, means)

    def check_layer(self, layer: str) -> TrainedADP:
        """An ADP reads h of the layer it was trained on: another layer is a ValueError (its h
        may have the same shape, and guidance would then push in meaningless directions)."""
        trained_on = self.meta.get("layer")
        if trained_on is not None and trained_on != layer:
            raise ValueError(
                f"the ADP was trained on h of layer {trained_on!r}, model.layer is {layer!r}: "
                "set model.layer to match, or retrain the ADP (fairsynth train-adp)"
            )
        return self

    @property
    def device(self) -> torch.device:
        return self.model.freqs.device

    def to(self, device: str | torch.device) -> TrainedADP:
        """The ADP on ``device``, in float32 (whatever the UNet's dtype), in place."""
        self.model.to(device=device, dtype=torch.float32)
        if self.means is not None:
            self.means = self.means.to(device)
        self._columns = None
        return self

    def _head_columns(self) -> dict[str, torch.Tensor]:
        columns = getattr(self, "_columns", None)
        if columns is None:
            columns = {
                n: torch.as_tensor(c, device=self.device) for n, c in (self.order or {}).items()
            }
            self._columns = columns
        return columns

    def joint_probs(
        self, h: torch.Tensor, t: torch.Tensor, names: tuple[str, ...], temperature: float = 1.0
    ) -> torch.Tensor:
        """Per-sample probabilities over the cells of ``names`` (product of per-attribute heads)."""
        return self.cell_probs(self.model(h, t), names, temperature)

    def cell_probs(
        self, logits: dict[str, torch.Tensor], names: tuple[str, ...], temperature: float = 1.0
    ) -> torch.Tensor:
        """``joint_probs`` from the ADP's output ``logits``."""
        columns = self._head_columns()
        out = None
        for name in names:
            z = logits[name] if name not in columns else logits[name][:, columns[name]]
            p = torch.softmax(z / temperature, dim=-1)
            out = p if out is None else (out[:, :, None] * p[:, None, :]).flatten(1)
        assert out is not None
        return out

    def save(self, path: str | Path) -> None:
        """Written into a sibling folder, then swapped in: a crash leaves the old ADP or the new
        one, never weights of one with the config of the other."""
        with staged_folder(path) as fresh:
            save_file(
                {k: v.contiguous() for k, v in self.model.state_dict().items()},
                fresh / "adp.safetensors",
            )
            if self.means is not None:
                tensors = {"cell_means": self.means.means.half(), "cell_counts": self.means.counts,
                           "timesteps": self.means.timesteps}  # fmt: skip
                save_file({k: v.contiguous().cpu() for k, v in tensors.items()}, fresh / MEANS_FILE)
            config = {"model": self.model.config, "attributes": self.space.as_dict(), **self.meta}
            (fresh / "adp.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> TrainedADP:
        """An ADP folder, in float32 on ``device``."""
        path = Path(path)
        for f in ADP_FILES:
            if not (path / f).is_file():
                raise FileNotFoundError(f"ADP folder {path} is missing {f}")
        config = json.loads((path / "adp.json").read_text())
        model = ADP.from_config(config.pop("model"))
        model.load_state_dict(load_file(path / "adp.safetensors"))
        model.eval().requires_grad_(False).to(device)
        space = AttributeSpace.from_dict(config.pop("attributes"))
        means = None
        if (path / MEANS_FILE).is_file():
            stored = load_file(path / MEANS_FILE)
            if "cell_means" in stored:  # else per-attribute means of an earlier version: unused
                means = CellMeans(stored["cell_means"], stored["cell_counts"], stored["timesteps"])
        return cls(model, space, config, None, means).to(device)  # means on device too
