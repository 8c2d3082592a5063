"""Attribute classifier folders (``config.json`` + ``model.safetensors``): a small conv net or
residual net with one softmax head per attribute. The toy world's pseudo-labeller and verifier
are such folders (trained by ``fairsynth.toyfaces.classifiers``); so is any classifier a user
trains for a world of their own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from fairsynth.core.folders import staged_folder

ARCHITECTURES = ("strided", "convnet", "resnet")


class ConvNet(nn.Module):
    """Plain VGG-style conv net (the pseudo-labeller)."""

    def __init__(self, heads: dict[str, int], width: int = 32):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(4 * w * 16, 128), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({k: nn.Linear(128, n) for k, n in heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}


class StridedNet(nn.Module):
    """Three stride-2 convolutions and a small head: ~20x fewer operations a step than
    ``ConvNet`` at 32x32 (the downstream experiment trains hundreds of them)."""

    def __init__(self, heads: dict[str, int], width: int = 16):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(3, w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(4 * w * 16, 64), nn.ReLU(),
        )  # fmt: skip
        self.heads = nn.ModuleDict({k: nn.Linear(64, n) for k, n in heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}


class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.n1 = nn.GroupNorm(8, c_in)
        self.c1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.n2 = nn.GroupNorm(8, c_out)
        self.c2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = (
            nn.Conv2d(c_in, c_out, 1, stride=stride)
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c1(F.silu(self.n1(x)))
        h = self.c2(F.silu(self.n2(h)))
        return h + self.skip(x)


class ResNet(nn.Module):
    """Small pre-activation residual net with group norm and global pooling (the verifier)."""

    def __init__(self, heads: dict[str, int], width: int = 24):
        super().__init__()
        w = width
        self.stem = nn.Conv2d(3, w, 5, padding=2)
        self.blocks = nn.Sequential(
            _ResBlock(w, w, 1), _ResBlock(w, 2 * w, 2), _ResBlock(2 * w, 4 * w, 2)
        )
        self.norm = nn.GroupNorm(8, 4 * w)
        self.heads = nn.ModuleDict({k: nn.Linear(4 * w, n) for k, n in heads.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm(self.blocks(self.stem(x))))
        return h.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        return {k: h(f) for k, h in self.heads.items()}


def build(arch: str, heads: dict[str, int]) -> nn.Module:
    if arch == "strided":
        return StridedNet(heads)
    if arch == "convnet":
        return ConvNet(heads)
    if arch == "resnet":
        return ResNet(heads)
    raise ValueError(f"unknown classifier architecture {arch!r}; expected one of {ARCHITECTURES}")


def to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 NHWC images (or float NCHW in [-1, 1]) -> float NCHW in [-1, 1]."""
    if isinstance(images, torch.Tensor) and images.is_floating_point():
        return images
    t = torch.as_tensor(np.asarray(images))
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (n, h, w, 3), got {tuple(t.shape)}")
    return (t.permute(0, 3, 1, 2).float() / 127.5 - 1.0).contiguous()


class AttributeClassifier:
    """A trained classifier with its attribute/class names: the object the pipeline calls."""

    def __init__(
        self, model: nn.Module, arch: str, attributes: dict[str, tuple[str, ...]], meta: dict
    ):
        self.model = model.eval()
        self.arch = arch
        self.attributes = {k: tuple(v) for k, v in attributes.items()}
        self.meta = meta

    @torch.no_grad()
    def predict_proba(
        self, images: np.ndarray | torch.Tensor, batch_size: int = 512
    ) -> dict[str, np.ndarray]:
        x = to_tensor(images)
        out: dict[str, list[np.ndarray]] = {k: [] for k in self.attributes}
        for s in range(0, len(x), batch_size):
            logits = self.model(x[s : s + batch_size].to(self.device))
            for k in self.attributes:
                out[k].append(torch.softmax(logits[k], -1).cpu().numpy())
        return {
            k: np.concatenate(v) if v else np.zeros((0, len(self.attributes[k])))
            for k, v in out.items()
        }

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
        x = to_tensor(images)
        return np.concatenate(
            [
                self.model.features(x[s : s + batch_size].to(self.device)).cpu().numpy()
                for s in range(0, len(x), batch_size)
            ]
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device) -> AttributeClassifier:
        self.model.to(device)
        return self

    def save(self, path: str | Path) -> None:
        """Written into a sibling folder, then swapped in: a crash leaves the old classifier or
        the new one, never weights of one with the config of the other."""
        with staged_folder(path) as fresh:
            save_file(
                {k: v.contiguous() for k, v in self.model.state_dict().items()},
                fresh / "model.safetensors",
            )
            config = {
                "arch": self.arch,
                "attributes": {k: list(v) for k, v in self.attributes.items()},
                **self.meta,
            }
            (fresh / "config.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> AttributeClassifier:
        path = Path(path)
        for f in ("config.json", "model.safetensors"):
            if not (path / f).is_file():
                raise FileNotFoundError(f"classifier folder {path} is missing {f}")
        config = json.loads((path / "config.json").read_text())
        attributes = {k: tuple(v) for k, v in config.pop("attributes").items()}
        arch = config.pop("arch")
        model = build(arch, {k: len(v) for k, v in attributes.items()})
        model.load_state_dict(load_file(path / "model.safetensors"))
        return cls(model.to(device), arch, attributes, config)


def load_folder(folder, settings=None, device: str = "cpu"):
    """The classifier saved in ``folder`` as a verifier (the folder kind's loader)."""
    from fairsynth.verify import ClassifierVerifier

    return ClassifierVerifier(AttributeClassifier.load(folder, device))
