"""Leave alone the attributes a target does not name: the guidance gradient, per sample, minus
its components along the directions in which the ADP's heads for those attributes change.

Under a trust region the step has a fixed length; a strong edit toward one attribute (skin) also
moves the others (eyeglasses, hair) toward their class boundaries, which both wastes part of
that length and leaves faces the verifier cannot read. Projected, the whole step goes to the
target, and the other heads' logits stay put to first order.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Heads = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]  # (h, t) -> logits


def untargeted_basis(
    heads: Heads, h: torch.Tensor, t: torch.Tensor, others: list[str]
) -> list[torch.Tensor]:
    """Per sample, an orthonormal basis (Gram-Schmidt, one tensor shaped like ``h`` per
    direction) of the gradients of the logit gaps z_k - z_0 of the heads ``others``: the
    directions that change those heads' softmax. ``heads`` is the ADP's network."""
    if not others:
        return []
    dims = tuple(range(1, h.ndim))
    with torch.enable_grad():
        leaf = h.detach().float().requires_grad_(True)
        logits = heads(leaf, t)
        gaps = [
            logits[n][:, k] - logits[n][:, 0] for n in others for k in range(1, logits[n].shape[1])
        ]
        basis: list[torch.Tensor] = []
        for i, gap in enumerate(gaps):
            # the ADP reads each sample alone, so the gradient of the batch sum is per sample
            (d,) = torch.autograd.grad(gap.sum(), leaf, retain_graph=i < len(gaps) - 1)
            d = project_off(d, basis)
            basis.append(d / torch.linalg.vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-12))
    return basis


def project_off(grad: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    """``grad`` minus its components along an orthonormal per-sample ``basis``."""
    dims = tuple(range(1, grad.ndim))
    for b in basis:
        grad = grad - (grad * b).sum(dims, keepdim=True) * b
    return grad
