"""The audit stage: per-cell counts of the reference against the target, and how each verifier does on the reference's own labels."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from fairsynth.app.config import Params
from fairsynth.app.resolve import verifier_spec
from fairsynth.app.stages.common import stage_main
from fairsynth.app.stages.reference import load_reference, reference_content_id
from fairsynth.data import shards
from fairsynth.data.plots import distribution_bars
from fairsynth.data.reference import (
    ReferenceData,
    audit,
    load_images,
    verifier_confusion,
)
from fairsynth.run.lock import OutputLock
from fairsynth.verify import load_one


def stage_audit(params: Params, out_dir: str | Path | None = None) -> dict:
    """Per-cell counts of the reference vs the target; JSON report and bar chart, in ``out_dir``
    (default: ``output.audit_dir``)."""
    out_dir = Path(params.output.audit_dir if out_dir is None else out_dir)
    target = params.build_target()
    data = load_reference(params)
    report = audit(data, target)
    report["reference_id"] = reference_content_id(params)
    if data.source != "classifier" and params.verify.audit_n > 0:
        report["verifiers"] = audit_verifiers(params, data)
    with OutputLock(out_dir):
        shards.write_json(out_dir / "audit.json", report)
        distribution_bars(
            report["cells"],
            {"reference": report["fractions"], "target": report["target"]},
            out_dir / "reference_vs_target.png",
            f"Reference ({report['n']} samples) vs target — FD {report['fd']:.3f}",
        )
    return report


def audit_verifiers(params: Params, data: ReferenceData) -> dict:
    """Each configured verifier against the reference's own labels (its first
    ``verify.audit_n`` samples): confusion matrices, per-class recall, rejections."""
    n = min(params.verify.audit_n, len(data.keys))
    keys = data.keys[:n]
    images = load_images(params.reference.source, params.reference.path, keys)
    labels = {k: np.asarray(v)[:n] for k, v in data.labels.items()}
    space = params.attribute_space()
    resolved = verifier_spec(params)
    names = {"first": params.verify.verifier, "second": params.verify.second}
    folders = {"first": resolved.first, "second": resolved.second}
    out = {"n": n}
    for role, name in names.items():
        if name is None:
            continue
        verifier = load_one(folders[role], resolved.settings, space)
        try:
            entry = verifier_confusion(verifier, images, labels, space)
            _check_usable(f"verify.{'verifier' if role == 'first' else 'second'}", name, entry,
                          space, n, sorted(verifier.attributes))  # fmt: skip
            out[role] = {"verifier": name, **entry}
        finally:
            verifier.close()
    return out


def _check_usable(key: str, name: str, entry: dict, space, n: int, judges: list) -> None:
    """A verifier that judges none of the attributes, or rejects most of the labelled
    reference, cannot decide what a run accepts: stop here, not after generating."""
    if not entry:
        raise ValueError(
            f"{key}: {name} judges none of the attributes {list(space.names)} (it judges {judges})"
        )
    rejected = max(e["rejected"] for e in entry.values())
    if n and rejected > n / 2:
        raise ValueError(
            f"{key}: {name} rejected {rejected} of the {n} labelled reference images it was "
            "audited on; does it take these images (size, content)? (verify.audit_n: 0 skips "
            "the audit)"
        )


def _cli(params: Params) -> None:
    r = stage_audit(params)
    print(f"reference: {r['n']} samples, FD to target {r['fd']:.3f}")


def main(argv: list[str] | None = None) -> int:
    return stage_main("audit", _cli, argv)


if __name__ == "__main__":
    sys.exit(main())
