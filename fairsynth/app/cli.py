"""The ``fairsynth`` command line."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from fairsynth.app.errors import USER_ERRORS
from fairsynth.app.errors import report as report_error
from fairsynth.core import plugins


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fairsynth", description="Fair synthetic data with diffusion models"
    )
    ap.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="before any work: params, files, image sizes (seconds)")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.set_defaults(func="fairsynth.app.weights:check_command")

    p = sub.add_parser("evaluate", help="sample with guidance and judge against the target")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--n", type=_positive_int, default=512)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="fairsynth.app.evaluate:evaluate_command")

    p = sub.add_parser("calibrate", help="sweep guidance strengths for the configured ADP")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--mode", choices=("distribution", "sample"), default="distribution")
    p.add_argument("--strengths", type=float, nargs="+", default=None,
                   help="default: 7 from 10 to 1000, geometric")  # fmt: skip
    p.add_argument("--n", type=_positive_int, default=256, help="samples per target and strength")
    p.add_argument("--family", action="store_true",
                   help="also each attribute's unguided fractions reversed (worst target rules)")  # fmt: skip
    p.add_argument("--record", action="store_true",
                   help="file the family sweep in the ADP folder's adp.json")  # fmt: skip
    p.add_argument("--max-quality-drop", type=_fraction, default=0.03,
                   help="a strength counts only if its confident fraction stays within this")  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="fairsynth.app.evaluate:calibrate_command")

    p = sub.add_parser("train-adp", help="record h_t trajectories and train the ADP")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--out", type=Path, default=None, help="default: adp.path")
    p.add_argument("--calibrate", action="store_true", help="also sweep guidance strengths")
    p.add_argument(
        "--trajectories", type=Path, default=None,
        help="reuse the h_t recording in this file, or save the new recording there",
    )  # fmt: skip
    p.add_argument("--means-only", action="store_true",
                   help="keep the ADP in --out; only add its class means (guidance.shift)")  # fmt: skip
    p.set_defaults(func="fairsynth.app.train_adp:train_adp_command")

    w = sub.add_parser("weights", help="the weight files the params need").add_subparsers(
        dest="weights_command", required=True
    )
    p = w.add_parser("check", help="list needed weight files, where expected, whether present")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func="fairsynth.app.weights:weights_check_command")

    for add_commands in plugins.all_provided("commands").values():
        add_commands(sub, _positive_int)
    return ap


def command(func: str | Callable[[argparse.Namespace], int]) -> Callable:
    """A command's function; ``"module:function"`` is imported only when that command runs
    (``--help`` and a bad params file then answer without loading torch or a model)."""
    if isinstance(func, str):
        module, _, name = func.partition(":")
        func = getattr(importlib.import_module(module), name)
    return func


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.threads is not None:
        import torch

        torch.set_num_threads(a.threads)
    try:
        return command(a.func)(a)
    except USER_ERRORS as exc:
        return report_error(exc)


if __name__ == "__main__":
    sys.exit(main())
