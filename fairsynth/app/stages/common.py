"""What the stage modules share: their default folders and their command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from fairsynth.app.config.params import Params, load_params
from fairsynth.app.errors import USER_ERRORS
from fairsynth.app.errors import report as report_error

USER_REFERENCES = (
    "folder",
    "shards",
)  # reference sources the user provides; others a world renders


def pipeline_outputs(params: Params, adp_out: str | Path | None) -> list[Path]:
    """Every output a balancing run writes: the flow locks them all before its first stage."""
    o = params.output
    outs = [Path(o.audit_dir), Path(o.dir), Path(o.report_dir)]
    if params.reference.source not in USER_REFERENCES:
        outs.insert(0, Path(params.reference.path))  # rendered by the run (a world's reference)
    if adp_out is not None:
        outs.insert(-2, Path(adp_out))
    return outs


def read_audit(params: Params, reference_id: str | None = None) -> dict | None:
    """The reference audit in ``output.audit_dir`` (the generate and report stages read it),
    when there is one. An audit made for another target (or, given its ``reference_id``,
    another reference) is refused, not used."""
    path = Path(params.output.audit_dir) / "audit.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    target = params.build_target()
    same = (
        report.get("cells") == target.space.cell_names()
        and len(report.get("target", [])) == len(target.probs)
        and all(abs(a - b) < 1e-6 for a, b in zip(report["target"], target.probs, strict=True))
    )
    if reference_id is not None:
        same = same and report.get("reference_id") == reference_id
    if not same:
        raise ValueError(
            f"{path}: this audit was made for another reference or target; run the audit "
            "stage with these params (or give them their own output.audit_dir)"
        )
    return report


def stage_main(name: str, run: Callable[[Params], object], argv: list[str] | None = None) -> int:
    """``python -m fairsynth.app.stages.<name> [--params params.yaml]``: the params validated
    before any work starts; a bad input is one line and exit code 2, never a traceback."""
    ap = argparse.ArgumentParser(
        prog=f"python -m fairsynth.app.stages.{name}", description=f"run the {name} stage"
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    a = ap.parse_args(argv)
    try:
        run(load_params(a.params))
    except USER_ERRORS as exc:
        return report_error(exc)
    return 0
