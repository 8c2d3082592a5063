"""Training the toy world's two independent attribute classifiers: a pseudo-labeller and a verifier.

They differ in architecture (plain conv net vs. residual net with group norm) and in seed, so
the verifier's judgement does not share the pseudo-labeller's mistakes. Both have one softmax
head per attribute and are trained on fresh, attribute-balanced renders with mild noise and
blur augmentation (generated samples are never as clean as renders).
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F

from fairsynth.toyfaces.render import ATTRIBUTES, render_batch
from fairsynth.verify.classifier import AttributeClassifier, build, to_tensor


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


LOG_EVERY = 250  # steps between loss lines


def train_classifier(
    arch: str,
    seed: int,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 2e-3,
    outlier_exposure: bool = False,
) -> AttributeClassifier:
    """A classifier of the toy attributes on fresh renders (AdamW, one-cycle schedule); with
    ``outlier_exposure``, also taught uniform outputs on broken images."""
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
        if (step + 1) % LOG_EVERY == 0:
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
