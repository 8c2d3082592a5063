"""The ``fairsynth`` command line."""

from __future__ import annotations

import argparse
import json
import sys
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


def _cmd_evaluate(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params
    from fairsynth.app.evaluate import evaluate

    report = evaluate(load_params(a.params), a.n, progress=not a.json)
    if a.json:
        print(json.dumps(report, indent=2))
    else:
        print(
            f"mode {report['mode']}: FD hard {report['fd_hard']:.4f}, soft {report['fd_soft']:.4f}"
        )
        for cell, t, h in zip(report["cells"], report["target"], report["hard"], strict=True):
            print(f"  {cell:<24} target {t:.3f}  got {h:.3f}")
        print(
            f"confident fraction {report['confident_fraction']:.3f}, "
            f"{report['seconds_per_batch']:.2f} s/batch"
        )
    return 0


def _cmd_train_adp(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params
    from fairsynth.app.train_adp import train_adp_from_params

    trained = train_adp_from_params(
        load_params(a.params), a.out, progress=True, calibrate=a.calibrate,
        trajectories_file=a.trajectories, means_only=a.means_only,
    )  # fmt: skip
    print(json.dumps({"out": str(a.out), **trained.meta}, indent=2))
    return 0


def _cmd_weights_check(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params
    from fairsynth.app.weights import check_weights, format_rows

    rows = check_weights(load_params(a.params))
    if a.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_rows(rows))
    missing = sum(not r["present"] for r in rows)
    if missing and not a.json:
        print(f"{missing} file(s) missing: runs with these params stop before generating")
    return 1 if missing else 0


def _cmd_calibrate(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params
    from fairsynth.app.evaluate import (
        calibrate_from_params,
        calibration_sweep,
        format_calibration,
    )

    params = load_params(a.params)
    if a.record and not a.family:
        print("fairsynth calibrate: --record files a family sweep; add --family", file=sys.stderr)
        return 2
    sweep = calibration_sweep(params, a.mode, strengths=a.strengths, n=a.n, family=a.family,
                              max_quality_drop=a.max_quality_drop)  # fmt: skip
    result = calibrate_from_params(params, sweep, progress=not a.json)
    print(json.dumps(result, indent=2) if a.json else format_calibration(result))
    if a.record:
        from fairsynth.app.calibrate import record_calibration
        from fairsynth.app.resolve import adp_folder

        folder = adp_folder(params)
        key = record_calibration(folder, result)
        print(
            f"recorded in {Path(folder) / 'adp.json'}: calibration_family[{key!r}]", file=sys.stderr
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="fairsynth", description="Fair synthetic data with diffusion models"
    )
    ap.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("evaluate", help="sample with guidance and judge against the target")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--n", type=_positive_int, default=512)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_evaluate)

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
    p.set_defaults(func=_cmd_calibrate)

    p = sub.add_parser("train-adp", help="record h_t trajectories and train the ADP")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--out", type=Path, default=Path("data/adp"))
    p.add_argument("--calibrate", action="store_true", help="also sweep guidance strengths")
    p.add_argument(
        "--trajectories", type=Path, default=None,
        help="reuse the h_t recording in this file, or save the new recording there",
    )  # fmt: skip
    p.add_argument("--means-only", action="store_true",
                   help="keep the ADP in --out; only add its class means (guidance.shift)")  # fmt: skip
    p.set_defaults(func=_cmd_train_adp)

    w = sub.add_parser("weights", help="the weight files the params need").add_subparsers(
        dest="weights_command", required=True
    )
    p = w.add_parser("check", help="list needed weight files, where expected, whether present")
    p.add_argument("--params", type=Path, default=Path("params.yaml"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_weights_check)

    for add_commands in plugins.all_provided("commands").values():
        add_commands(sub, _positive_int)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if a.threads is not None:
        import torch

        torch.set_num_threads(a.threads)
    try:
        return a.func(a)
    except USER_ERRORS as exc:
        return report_error(exc)


if __name__ == "__main__":
    sys.exit(main())
