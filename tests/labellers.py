"""Verifiers for tests, named in params as ``tests.labellers:<factory>`` (the callable kind):
they label what a random tiny model draws in a known way, so that a pipeline test has every
class it needs."""

import numpy as np

from fairsynth.toyfaces.render import ATTRIBUTES
from fairsynth.verify.verdict import Verdict


class Cycling:
    """Sample i of a batch gets class (i + k) mod n of the k-th attribute: every class in
    every batch of a few samples, whatever the images."""

    attributes = {name: tuple(classes) for name, classes in ATTRIBUTES.items()}

    def verify(self, images) -> Verdict:
        probs = {}
        for k, (name, classes) in enumerate(self.attributes.items()):
            picks = (np.arange(len(images)) + k) % len(classes)
            probs[name] = np.eye(len(classes))[picks]
        return Verdict(probs)

    def close(self) -> None:
        pass


def cycling() -> Cycling:
    return Cycling()


class Rejecting(Cycling):
    """``Cycling``, but every fourth sample of a batch is rejected (``no_face``)."""

    def verify(self, images) -> Verdict:
        v = super().verify(images)
        return Verdict(v.probs, ["no_face" if i % 4 == 3 else None for i in range(len(images))])


def rejecting() -> Rejecting:
    return Rejecting()


class Constant(Cycling):
    """The first class of every attribute for every image."""

    def verify(self, images) -> Verdict:
        return Verdict({n: np.eye(len(c))[np.zeros(len(images), int)]
                        for n, c in self.attributes.items()})  # fmt: skip


def constant() -> Constant:
    return Constant()
