"""Train the toy-faces pseudo-labeller and verifier and write them into the package.

    python -m fairsynth.toyfaces.train_classifiers --out fairsynth/toyfaces/weights

Each is checked on 5,000 fresh renders (a seed neither saw in training); the accuracies are
stored in its config.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from fairsynth.toyfaces.classifiers import accuracy_on_fresh_renders, train_classifier

# role: (architecture, seed, outlier exposure). Only the verifier's confidence is used as an
# acceptance signal, so only it is trained to be unconfident on blends and mush.
ROLES = {"pseudo_labeller": ("convnet", 1, False), "verifier": ("resnet", 2, True)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "weights")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--roles", nargs="+", default=list(ROLES), choices=list(ROLES))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for role in a.roles:
        arch, seed, oe = ROLES[role]
        clf = train_classifier(arch, seed, steps=a.steps, outlier_exposure=oe)
        acc = accuracy_on_fresh_renders(clf)
        clf.meta.update({"role": role, "accuracy_fresh_5000": acc})
        clf.save(a.out / role)
        print(role, json.dumps(acc), flush=True)


if __name__ == "__main__":
    main()
