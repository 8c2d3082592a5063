"""Leave alone the attributes a target does not name: the guidance gradient, per sample, minus
its components along the directions in which the ADP's heads for those attributes change.

Under a trust region the step has a fixed length; a strong edit toward one attribute (skin) also
moves the others (eyeglasses, hair) toward their class boundaries, which both wastes part of
that length and leaves faces the verifier cannot read. Projected, the whole step goes to the
target, and the other heads' logits stay put to first order.
"""

from __future__ import annotations

import torch


def protected_gradient(
    loss: torch.Tensor, logits: dict[str, torch.Tensor], leaf: torch.Tensor, others: list[str]
) -> torch.Tensor:
    """d loss / d ``leaf`` minus its components along the gradients of the logit gaps
    z_k - z_0 of the heads ``others`` (the directions that change those heads' softmax), per
    sample. ``logits`` is the ADP's output on ``leaf`` and ``loss`` is computed from it: the
    loss gradient and the gaps' share one forward pass."""
    if not others:
        return torch.autograd.grad(loss, leaf)[0]
    (grad,) = torch.autograd.grad(loss, leaf, retain_graph=True)
    gaps = [logits[n][:, k] - logits[n][:, 0] for n in others for k in range(1, logits[n].shape[1])]
    # the ADP reads each sample alone, so the gradient of a batch sum is per sample. (Batched
    # vector-Jacobian products, is_grads_batched, were no faster here: the convolutions'
    # backward passes are the cost, not their number of calls.)
    directions = [
        torch.autograd.grad(gap.sum(), leaf, retain_graph=i < len(gaps) - 1)[0]
        for i, gap in enumerate(gaps)
    ]
    return project_off(grad, orthonormal(directions))


def orthonormal(directions: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per sample, Gram-Schmidt over ``directions`` (each shaped like h)."""
    basis: list[torch.Tensor] = []
    for d in directions:
        d = project_off(d, basis)
        dims = tuple(range(1, d.ndim))
        basis.append(d / torch.linalg.vector_norm(d, dim=dims, keepdim=True).clamp_min(1e-12))
    return basis


def project_off(grad: torch.Tensor, basis: list[torch.Tensor]) -> torch.Tensor:
    """``grad`` minus its components along an orthonormal per-sample ``basis``."""
    dims = tuple(range(1, grad.ndim))
    for b in basis:
        grad = grad - (grad * b).sum(dims, keepdim=True) * b
    return grad
