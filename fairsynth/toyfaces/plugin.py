"""The toy world as a plugin: its shipped folders, its attributes, its reference renderer, its
downstream test set and its commands, registered by name (``toyfaces``) for the app to find."""

from __future__ import annotations

import numpy as np

from fairsynth.toyfaces import (
    ADP_DIR,
    DDPM_DIR,
    PSEUDO_LABELLER_DIR,
    T2I_ADP_DIR,
    T2I_DIR,
    VERIFIER_DIR,
)

NAME = "toyfaces"
T2I_NAME = "toyfaces-t2i"  # the toy text-to-image model and its ADP


def build_reference(path, n: int, seed: int, progress: bool = True):
    from fairsynth.toyfaces.dataset import build_reference

    return build_reference(path, n=n, seed=seed, progress=progress)


def render_test_set(
    space, sensitive: str, label: str, per_cell: int, seed: int
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``per_cell`` fresh renders per (sensitive, label) cell (uint8 NHWC) and their labels;
    the other attributes drawn at random."""
    from fairsynth.toyfaces.render import ATTRIBUTES, render, sample_params

    for n in (sensitive, label):
        if tuple(space.classes(n)) != tuple(ATTRIBUTES.get(n, ())):
            raise ValueError(f"downstream.test: toyfaces renders {n} as {ATTRIBUTES.get(n)}")
    k_s, k_l = len(space.classes(sensitive)), len(space.classes(label))
    grid = np.arange(k_s * k_l).repeat(per_cell)
    labels = {sensitive: grid // k_l, label: grid % k_l}
    images = render(sample_params(len(grid), np.random.default_rng(seed), labels=labels))
    return images, labels


def add_commands(sub, positive_int) -> None:
    from fairsynth.toyfaces.cli import add_commands

    add_commands(sub, positive_int)


def register(registry) -> None:
    from fairsynth.toyfaces.render import ATTRIBUTES

    for kind, path in (
        ("model", DDPM_DIR),
        ("adp", ADP_DIR),
        ("verifier", VERIFIER_DIR),
        ("pseudo_labeller", PSEUDO_LABELLER_DIR),
    ):
        registry.artefact(kind, NAME, path)
    registry.artefact("model", T2I_NAME, T2I_DIR)
    registry.artefact("adp", T2I_NAME, T2I_ADP_DIR)
    registry.provide("attributes", NAME, {k: tuple(v) for k, v in ATTRIBUTES.items()})
    registry.provide("reference", NAME, build_reference)
    registry.provide("test_set", NAME, render_test_set)
    registry.provide("commands", NAME, add_commands)
