"""The pseudo-labeller's labels for ADP training: what it could not label is counted and never
trained on, and training stops before it would learn from too little."""

from __future__ import annotations

from collections import Counter

import numpy as np

from fairsynth.app.config import Params
from fairsynth.core.plugins import resolve
from fairsynth.guidance.trajectories import Trajectories
from fairsynth.verify import AlignedVerifier, load_one


class PseudoLabeller:
    """The pseudo-labeller as a function of images: per attribute, probabilities in the
    params' class order; NaN for an image it rejects (never trained on). Counts the rejections
    by reason."""

    def __init__(self, params: Params, device: str):
        name = params.adp.pseudo_labeller
        inner = load_one(resolve("pseudo_labeller", name), params.verify, device=device)
        space = params.attribute_space()
        missing = [n for n in space.names if n not in inner.attributes]
        if missing:
            raise ValueError(
                f"adp.pseudo_labeller: {name} does not label attribute(s) {missing} (it labels "
                f"{sorted(inner.attributes)})"
            )
        self.verifier = AlignedVerifier(inner, space)  # labels in the params' class order
        self.seen, self.rejected = 0, Counter()

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        verdict = self.verifier.verify(images)
        probs = {k: np.array(v, dtype=np.float64) for k, v in verdict.probs.items()}
        for i, reason in enumerate(verdict.rejects):
            if reason is not None:
                self.rejected[reason] += 1
                for p in probs.values():
                    p[i] = np.nan
        self.seen += len(images)
        return probs


def check_labels(params: Params, labeller: PseudoLabeller | None, traj: Trajectories) -> None:
    """Stop before training on what the pseudo-labeller could not use: more rejections than
    ``adp.max_rejected`` allows, or a class it gave no image."""
    a, name = params.adp, params.adp.pseudo_labeller
    if labeller is not None and labeller.seen:
        share = sum(labeller.rejected.values()) / labeller.seen
        if share > a.max_rejected:
            reasons = ", ".join(f"{r} {n}" for r, n in labeller.rejected.most_common())
            raise ValueError(
                f"adp.pseudo_labeller: {name} rejected {sum(labeller.rejected.values())} of "
                f"{labeller.seen} recorded images ({reasons}), more than adp.max_rejected "
                f"{a.max_rejected:g} allows; does it take this model's images (size, content)?"
            )
    for attribute, classes in params.attribute_space().attributes:
        counts = np.bincount(np.asarray(traj.labels[attribute]), minlength=len(classes))
        empty = [c for c, k in zip(classes, counts, strict=True) if k == 0]
        if empty:
            raise ValueError(
                f"adp.pseudo_labeller: {name} labelled no recorded image {attribute}={empty} "
                f"(of {len(traj.h)}): the ADP cannot learn a class it never sees; record more "
                "trajectories (adp.trajectories) or check the pseudo-labeller's classes"
            )
