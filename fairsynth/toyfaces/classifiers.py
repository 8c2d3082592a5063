"""Two independent attribute classifiers for toy faces: a pseudo-labeller and a verifier.

They differ in architecture (plain conv net vs. residual net with group norm) and in seed, so
the verifier's judgement does not share the pseudo-labeller's mistakes. Both have one softmax
head per attribute and are trained on fresh, attribute-balanced renders with mild noise and
blur augmentation (generated samples are never as clean as renders).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from fairsynth.toyfaces.render import ATTRIBUTES, render_batch

ARCHITECTURES = ("convnet", "resnet")


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
            logits = self.model(x[s : s + batch_size])
            for k in self.attributes:
                out[k].append(torch.softmax(logits[k], -1).numpy())
        return {
            k: np.concatenate(v) if v else np.zeros((0, len(self.attributes[k])))
            for k, v in out.items()
        }

    @torch.no_grad()
    def features(self, images: np.ndarray | torch.Tensor, batch_size: int = 512) -> np.ndarray:
        x = to_tensor(images)
        return np.concatenate(
            [
                self.model.features(x[s : s + batch_size]).numpy()
                for s in range(0, len(x), batch_size)
            ]
        )

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(
            {k: v.contiguous() for k, v in self.model.state_dict().items()},
            path / "model.safetensors",
        )
        config = {
            "arch": self.arch,
            "attributes": {k: list(v) for k, v in self.attributes.items()},
            **self.meta,
        }
        (path / "config.json").write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> AttributeClassifier:
        path = Path(path)
        for f in ("config.json", "model.safetensors"):
            if not (path / f).is_file():
                raise FileNotFoundError(f"classifier folder {path} is missing {f}")
        config = json.loads((path / "config.json").read_text())
        attributes = {k: tuple(v) for k, v in config.pop("attributes").items()}
        arch = config.pop("arch")
        model = build(arch, {k: len(v) for k, v in attributes.items()})
        model.load_state_dict(load_file(path / "model.safetensors"))
        return cls(model, arch, attributes, config)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mild noise and blur, so the classifier stays calibrated on imperfect generated samples."""
    n = x.shape[0]
    sigma = torch.rand(n, 1, 1, 1, generator=gen) * 0.12
    x = x + sigma * torch.randn(x.shape, generator=gen)
    blur = (torch.rand(n, generator=gen) < 0.3)[:, None, None, None]
    kernel = torch.tensor([0.25, 0.5, 0.25])
    k2 = (kernel[:, None] * kernel[None, :]).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k2, groups=3)
    return torch.where(blur, blurred, x).clamp(-1.2, 1.2)


def outlier_batch(
    x: torch.Tensor, labels: dict[str, np.ndarray], heads: dict[str, int], gen: torch.Generator
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outlier exposure: blends of two faces (soft labels by blend weight) and mush (heavy
    noise, blurred noise fields) with uniform targets, so a confident prediction means a clear
    face and a blurry or garbled sample is not called confidently."""
    n = x.shape[0] // 4
    perm = torch.randperm(x.shape[0], generator=gen)[:n]
    lam = 0.3 + 0.4 * torch.rand(n, generator=gen)
    mixed = lam[:, None, None, None] * x[:n] + (1 - lam[:, None, None, None]) * x[perm]
    noisy = x[:n] + (0.6 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)) * torch.randn(
        x[:n].shape, generator=gen
    )
    field = torch.randn(n, 3, 4, 4, generator=gen)
    field = F.interpolate(field, size=x.shape[-1], mode="bilinear", align_corners=False)
    field = field + 0.3 * torch.randn(field.shape, generator=gen)
    junk = torch.cat([mixed, noisy.clamp(-1.5, 1.5), field.clamp(-1.5, 1.5)])
    targets = {}
    for k, c in heads.items():
        onehot = F.one_hot(torch.as_tensor(labels[k]), c).float()
        soft_mix = lam[:, None] * onehot[:n] + (1 - lam[:, None]) * onehot[perm]
        uniform = torch.full((2 * n, c), 1.0 / c)
        targets[k] = torch.cat([soft_mix, uniform])
    return junk, targets


def train_classifier(
    arch: str,
    seed: int,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    log_every: int = 250,
    outlier_exposure: bool = False,
) -> AttributeClassifier:
    torch.manual_seed(seed)
    heads = {k: len(v) for k, v in ATTRIBUTES.items()}
    model = build(arch, heads)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.time()
    for step in range(steps):
        images, labels = render_batch(batch_size, seed=seed * 1_000_003 + step)
        x = augment(to_tensor(images), gen)
        logits = model(x)
        loss = sum(F.cross_entropy(logits[k], torch.as_tensor(labels[k])) for k in heads)
        if outlier_exposure:
            junk, soft = outlier_batch(to_tensor(images), labels, heads, gen)
            jl = model(junk)
            loss = loss + sum(F.cross_entropy(jl[k], soft[k]) for k in heads)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0:
            print(
                f"[{arch}] step {step + 1} loss {float(loss.detach()):.4f} {time.time() - t0:.0f}s",
                flush=True,
            )
    meta = {
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "outlier_exposure": outlier_exposure,
        "seconds": round(time.time() - t0),
    }
    return AttributeClassifier(model, arch, ATTRIBUTES, meta)


def accuracy_on_fresh_renders(
    clf: AttributeClassifier, n: int = 5000, seed: int = 987_654
) -> dict[str, float]:
    """Per-attribute accuracy on ``n`` fresh balanced renders (seed disjoint from training)."""
    images, labels = render_batch(n, seed=seed)
    probs = clf.predict_proba(images)
    return {k: float((probs[k].argmax(1) == labels[k]).mean()) for k in clf.attributes}
