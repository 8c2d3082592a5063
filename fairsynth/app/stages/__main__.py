"""``python -m fairsynth.app.stages STAGE [--params FILE]``: run one pipeline stage, or ``show``
the report's table."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

STAGES = ("reference", "audit", "train_adp", "generate", "report")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(
        prog="python -m fairsynth.app.stages", description="run one pipeline stage"
    )
    ap.add_argument("stage", choices=[*STAGES, "show", "show-prompts"])
    a, rest = ap.parse_known_args(argv)
    if a.stage == "show-prompts":  # a text-to-image output's index.json, per prompt
        from fairsynth.app.stages.report import format_prompts

        index = Path(rest[0] if rest else "data/shards/index.json")
        if not index.is_file():
            print(f"error: no index at {index}: run the generate stage first", file=sys.stderr)
            return 2
        print(format_prompts(json.loads(index.read_text())))
        return 0
    if a.stage == "show":
        from fairsynth.app.config import load_params
        from fairsynth.app.stages.report import format_metrics

        params_file = Path(rest[0] if rest else "params.yaml")
        report_dir = Path(load_params(params_file).output.report_dir) if params_file.is_file() \
            else Path("data/report")  # fmt: skip
        print(format_metrics(json.loads((report_dir / "metrics.json").read_text())))
        return 0
    return importlib.import_module(f"fairsynth.app.stages.{a.stage}").main(rest)


if __name__ == "__main__":
    sys.exit(main())
