"""``fairsynth toyfaces ...``: the toy world's commands (registered by its plugin)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from fairsynth.toyfaces import DDPM_DIR, PSEUDO_LABELLER_DIR, T2I_DIR, VERIFIER_DIR


def _cmd_build_reference(a: argparse.Namespace) -> int:
    from fairsynth.toyfaces.dataset import build_reference

    labels = build_reference(a.out, n=a.n, seed=a.seed, progress=not a.quiet)
    fr = {
        name: labels[name].value_counts(normalize=True).round(4).to_dict()
        for name in ("skin", "eyeglasses", "hair")
    }
    print(json.dumps({"out": str(a.out), "n": len(labels), "fractions": fr}, indent=2))
    return 0


def _cmd_audit_model(a: argparse.Namespace) -> int:
    from fairsynth.toyfaces.audit_model import (
        Engine,
        Sampling,
        audit_model,
        format_report,
        save_report,
    )

    how = Sampling(a.n, a.seed, a.steps, a.batch_size, a.eta)
    engine = Engine(a.model, a.verifier, a.device, a.dtype)
    report = audit_model(how, engine, a.reference, a.grid, progress=not a.json)
    if a.out is not None:
        save_report(report, a.out)
    print(json.dumps(report, indent=2) if a.json else format_report(report))
    return 0


def _cmd_audit_t2i(a: argparse.Namespace) -> int:
    from fairsynth.toyfaces.audit_model import Engine, Sampling
    from fairsynth.toyfaces.audit_t2i import audit_text2image, format_t2i_report

    how = Sampling(a.n, a.seed, a.steps, a.batch_size, a.eta)
    report = audit_text2image(how, tuple(a.cfg), a.preset_cfg, Engine(a.model, a.verifier),
                              progress=not a.json, grid_dir=a.grids)  # fmt: skip
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2) if a.json else format_t2i_report(report))
    return 0 if report["all_pass"] or not a.check else 1


def _cmd_check_classifiers(a: argparse.Namespace) -> int:
    from fairsynth.toyfaces.classifiers import accuracy_on_fresh_renders
    from fairsynth.verify.classifier import AttributeClassifier

    out = {}
    for role, path in (("pseudo_labeller", PSEUDO_LABELLER_DIR), ("verifier", VERIFIER_DIR)):
        out[role] = accuracy_on_fresh_renders(AttributeClassifier.load(path), n=a.n, seed=a.seed)
    print(json.dumps(out, indent=2))
    return 0


def _cmd_show_audit(a: argparse.Namespace) -> int:
    from fairsynth.toyfaces.audit_model import format_report

    if not a.file.is_file():
        raise FileNotFoundError(
            f"no audit report at {a.file}; run `fairsynth toyfaces audit-model --out {a.file}`"
        )
    print(format_report(json.loads(a.file.read_text())))
    return 0


def add_commands(sub, positive_int: Callable[[str], int]) -> None:
    toy = sub.add_parser("toyfaces", help="the embedded toy-faces world").add_subparsers(
        dest="toy_command", required=True
    )
    p = toy.add_parser("build-reference", help="render the biased reference dataset")
    p.add_argument("--out", type=Path, default=Path("data/reference"))
    p.add_argument("--n", type=positive_int, default=20_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_build_reference)

    p = toy.add_parser(
        "audit-model", help="sample the toy DDPM and compare its bias to the reference"
    )
    p.add_argument("--n", type=positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive_int, default=50, help="DDIM steps")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta (0: deterministic)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--model", type=Path, default=DDPM_DIR)
    p.add_argument("--verifier", type=Path, default=VERIFIER_DIR)
    p.add_argument("--reference", type=Path, default=Path("data/reference"))
    p.add_argument("--grid", type=Path, default=Path("data/audit/model_samples.png"))
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_audit_model)

    p = toy.add_parser(
        "audit-t2i",
        help="sample the toy text-to-image model per prompt and CFG scale; compare each "
        "prompt's fractions with its training bias",
    )
    p.add_argument("--n", type=positive_int, default=512, help="samples per prompt and scale")
    p.add_argument("--cfg", type=float, nargs="+", default=[1.0, 3.0, 7.5], help="CFG scales")
    p.add_argument("--preset-cfg", type=float, default=None, help="the scale the bars apply at")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=positive_int, default=25, help="DDIM steps")
    p.add_argument("--eta", type=float, default=1.0, help="DDIM eta (0: deterministic)")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--model", type=Path, default=T2I_DIR)
    p.add_argument("--verifier", type=Path, default=VERIFIER_DIR)
    p.add_argument("--grids", type=Path, default=None, help="a sample grid per prompt here")
    p.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--check", action="store_true", help="exit 1 when a prompt misses a bar")
    p.set_defaults(func=_cmd_audit_t2i)

    p = toy.add_parser("show-audit", help="print a saved audit-model report as a table")
    p.add_argument("file", type=Path)
    p.set_defaults(func=_cmd_show_audit)

    p = toy.add_parser(
        "check-classifiers", help="accuracy of the shipped classifiers on fresh renders"
    )
    p.add_argument("--n", type=positive_int, default=5000)
    p.add_argument("--seed", type=int, default=987_654)
    p.set_defaults(func=_cmd_check_classifiers)
