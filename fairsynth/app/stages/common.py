"""What the stage modules share: their default folders and their command line."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from fairsynth.app.config import Params, load_params
from fairsynth.app.errors import USER_ERRORS
from fairsynth.app.errors import report as report_error

AUDIT_DIR = Path("data/audit")
REPORT_DIR = Path("data/report")
USER_REFERENCES = (
    "folder",
    "shards",
)  # reference sources the user provides; others a world renders


def pipeline_outputs(params: Params, adp_out: str | Path | None) -> list[Path]:
    """Every output a balancing run writes: the flow locks them all before its first stage."""
    outs = [AUDIT_DIR, Path(params.output.dir), REPORT_DIR]
    if params.reference.source not in USER_REFERENCES:
        outs.insert(0, Path(params.reference.path))  # rendered by the run (a world's reference)
    if adp_out is not None:
        outs.insert(-2, Path(adp_out))
    return outs


def read_audit() -> dict | None:
    """The reference audit of ``dvc repro`` (the generate and report stages read it)."""
    path = AUDIT_DIR / "audit.json"
    return json.loads(path.read_text()) if path.is_file() else None


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
