"""The reference stage: render the toy reference (``reference.source`` a world's name) or check a user's folder; and reading the reference with its labels (or the verifier's)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from fairsynth.app.config import Params
from fairsynth.app.resolve import verifier_spec
from fairsynth.app.stages.common import USER_REFERENCES, stage_main
from fairsynth.core import plugins
from fairsynth.core.filehash import files_signature
from fairsynth.core.metrics import cell_counts
from fairsynth.data import shards
from fairsynth.data.labels import LabelMapping
from fairsynth.data.reference import (
    ReferenceData,
    read_image_folder,
    read_shards,
)
from fairsynth.run.ledger import fingerprint
from fairsynth.run.lock import OutputLock
from fairsynth.verify import load_verifier

RENDERED = "rendered.json"  # what a world's reference was rendered from, and its files' sha256


def stage_reference(params: Params) -> str:
    """Render a world's reference (``reference.source`` the world's name) into
    ``reference.path``, unless the folder already holds that rendering, intact; a user's
    reference (``folder``, ``shards``) is only checked to exist."""
    ref = params.reference
    if ref.source in USER_REFERENCES:
        if not Path(ref.path).exists():
            raise FileNotFoundError(f"reference.path {ref.path} does not exist")
        return ref.path
    folder = Path(ref.path)
    made_from = {"source": ref.source, "n": ref.n, "seed": ref.seed}
    with OutputLock(folder):
        if _rendered_from(folder) == made_from:
            print(f"{folder}: the reference is up to date, not rendered again", file=sys.stderr)
            return ref.path
        (folder / RENDERED).unlink(missing_ok=True)  # until the rendering is complete
        plugins.provided("reference", ref.source)(ref.path, n=ref.n, seed=ref.seed)
        files = {p.name: shards.sha256_file(p) for p in sorted(folder.iterdir())
                 if p.is_file() and p.name != RENDERED}  # fmt: skip
        shards.write_json(folder / RENDERED, {**made_from, "files": files})
    return ref.path


def _rendered_from(folder: Path) -> dict | None:
    """What the folder's complete rendering was made from, if its files are as recorded."""
    try:
        record = json.loads((folder / RENDERED).read_text())
        files = record.pop("files")
    except (OSError, ValueError, KeyError, AttributeError):
        return None
    return record if shards.files_intact(folder, files) else None


def label_mapping(ref) -> LabelMapping:
    """The ``reference`` section's column and class mapping, as the readers take it."""
    classes = {a: {str(k): v for k, v in t.items()} for a, t in (ref.classes or {}).items()}
    return LabelMapping(dict(ref.columns or {}), classes, ref.ignore_case)


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

    mapping = label_mapping(ref)
    if ref.source == "folder":
        return read_image_folder(ref.path, space, ref.labels, labeller, mapping)
    return read_shards(ref.path, space, labeller, ref.labels, mapping)


def reference_content_id(params: Params) -> str:
    """The reference's files (and labels file) by content: a top-up notices new data by it."""
    ref = params.reference
    parts = [files_signature(ref.path)]
    if ref.labels is not None:
        parts.append(files_signature(ref.labels))
    return fingerprint(parts)


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
