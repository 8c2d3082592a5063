"""The downstream experiment's datasets besides the reference: what the published dataset
holds, the params of its control (c) (rejection sampling to the same quotas, the same model,
verifier and cost, guidance off), and the balanced test set."""

from __future__ import annotations

import math

import numpy as np
import torch

from fairsynth.app.config import ConfigError, Params, replace
from fairsynth.core import plugins
from fairsynth.data import shards
from fairsynth.data.feed import Feed, make_loader


def published_index(params: Params) -> dict:
    found = shards.latest_publication(params.output.dir)  # a regeneration keeps the old one
    if found is None:
        raise FileNotFoundError(
            f"{params.output.dir}/index.json not found: publish the balanced dataset first "
            "(dvc repro generate, or the balance flow)"
        )
    return found[0]


def control_params(params: Params, published: dict) -> Params:
    """The published run's params with guidance off: rejection sampling to the same quotas,
    generating at most ``control_budget`` x what the published run generated (1: the same
    cost; the rare cells then fall short, which is what the comparison is about)."""
    budget = max(1, math.ceil(params.downstream.control_budget * int(published["generated"])))
    return replace(
        params,
        guidance=replace(params.guidance, mode="none"),
        generate=replace(
            params.generate, dataset=f"{params.generate.dataset}-rejection", budget=budget
        ),
        output=replace(params.output, dir=params.downstream.control_dir),
    )


def test_set(params: Params) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
    """Images (float NCHW in [0, 1]) and labels, balanced over (sensitive, label) cells."""
    d = params.downstream
    space = params.attribute_space()
    renderers = plugins.all_provided("test_set")
    if d.test in renderers:  # a world's fresh renders (toyfaces)
        try:
            images, labels = renderers[d.test](
                space, d.sensitive, d.label, d.test_per_cell, d.test_seed
            )
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return x, labels
    feed = Feed(
        None, reference=d.test, attributes=dict(space.attributes), shuffle=0, on_error="raise"
    )
    xs, labels = [], {d.sensitive: [], d.label: []}
    for batch in make_loader(feed, batch_size=256):
        xs.append(batch["image"])
        for n in labels:
            labels[n].append(batch["labels"][n].numpy())
    lab = {n: np.concatenate(v) for n, v in labels.items()}
    if any((v < 0).any() for v in lab.values()):
        raise ValueError(f"downstream.test: {d.test} has samples without {list(labels)} labels")
    return torch.cat(xs), lab
