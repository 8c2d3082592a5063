"""The reference stage: render the toy reference (``reference.source`` a world's name) or check a user's folder; and reading the reference with its labels (or the verifier's)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fairsynth.app.config import Params
from fairsynth.app.resolve import verifier_spec
from fairsynth.app.stages.common import stage_main
from fairsynth.core import plugins
from fairsynth.core.metrics import cell_counts
from fairsynth.data.reference import (
    ReferenceData,
    read_image_folder,
    read_shards,
)
from fairsynth.verify import load_verifier


def stage_reference(params: Params) -> str:
    """Render the toy reference dataset (only for ``reference.source: toyfaces``)."""
    ref = params.reference
    if ref.source == "toyfaces":
        plugins.provided("reference", ref.source)(ref.path, n=ref.n, seed=ref.seed)
    elif not Path(ref.path).exists():
        raise FileNotFoundError(f"reference.path {ref.path} does not exist")
    return ref.path


def load_reference(params: Params) -> ReferenceData:
    ref, space = params.reference, params.attribute_space()
    labeller = None
    if ref.labels is None:
        verifier = load_verifier(verifier_spec(params), params.attribute_space())

        def labeller(images: np.ndarray) -> dict[str, np.ndarray]:
            verdict = verifier.verify(images)
            bad = [r for r in verdict.rejects if r is not None]
            if bad:
                raise ValueError(
                    f"the verifier cannot label {len(bad)} reference image(s) ({sorted(set(bad))}); "
                    "give the reference a labels file (reference.labels)"
                )
            return verdict.probs

    if ref.source == "folder":
        return read_image_folder(ref.path, space, ref.labels, classifier=labeller)
    return read_shards(ref.path, space, classifier=labeller, labels_file=ref.labels)


def reference_counts(params: Params) -> np.ndarray:
    data = load_reference(params)
    space = params.build_target().space
    return cell_counts(space.cell_index({n: data.labels[n] for n in space.names}), space.n_cells)


def _cli(params: Params) -> None:
    print(stage_reference(params))


def main(argv: list[str] | None = None) -> int:
    return stage_main("reference", _cli, argv)


if __name__ == "__main__":
    sys.exit(main())
