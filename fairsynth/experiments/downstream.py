"""The downstream experiment: does fairsynth's data train a fairer classifier?

A classifier of ``downstream.label`` is trained on three datasets, each read through
``fairsynth.data.feed`` exactly as a user would:

(a) ``reference``: the first ``reference_n`` samples of the biased reference;
(b) ``reference+fairsynth``: (a) + the published shards (distribution-guided, quota-checked);
(c) ``reference+rejection``: (a) + as many *rejection-sampled* unguided samples: the same model
    without guidance, the same verifier and the same per-cell quotas (fairsynth's baseline).

Each is evaluated on a test set balanced over (sensitive x label) cells. Group metrics come from
Fairlearn's ``MetricFrame`` (accuracy per group of ``downstream.sensitive``, worst group, gap),
for every seed; effects (b - a, c - a, b - c) are paired over seeds with a 95 % t-interval.

    python -m fairsynth.experiments.downstream [--params params.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fairsynth.app.config import ConfigError, Params, load_params, replace
from fairsynth.app.errors import USER_ERRORS
from fairsynth.app.errors import report as report_error
from fairsynth.app.runspec import expected_fingerprint
from fairsynth.core import plugins
from fairsynth.data import shards
from fairsynth.data.feed import Feed, make_loader
from fairsynth.data.runlog import write_run_record
from fairsynth.experiments.statistics import group_metrics, predict, summarize

SETTINGS = ("reference", "reference+fairsynth", "reference+rejection")


def reference_keys(params: Params) -> list[str]:
    """The first ``reference_n`` keys of the reference (its labels file order)."""
    ref = Path(params.reference.path)
    labels = ref / "labels.parquet"
    if params.reference.source not in ("toyfaces", "shards") or not labels.is_file():
        raise ConfigError(
            "downstream: the reference must be webdataset shards with labels.parquet "
            f"(reference.source toyfaces or shards; {labels} missing)"
        )
    keys = pd.read_parquet(labels, columns=["key"])["key"].astype(str).tolist()
    n = params.downstream.reference_n
    if n > len(keys):
        raise ConfigError(f"downstream.reference_n: {n} > the reference's {len(keys)} samples")
    return keys[:n]


def published_index(params: Params) -> dict:
    index = Path(params.output.dir) / "index.json"
    if not index.is_file():
        raise FileNotFoundError(
            f"{index} not found: publish the balanced dataset first (dvc repro generate, "
            "or the balance flow)"
        )
    return json.loads(index.read_text())


def build_control(params: Params, progress: bool = True) -> Path:
    """(c): rejection sampling to the published dataset's quotas, once (kept on disk)."""
    from fairsynth.app.stages.generate import stage_generate

    d = params.downstream
    published = published_index(params)
    out = Path(d.control_dir)
    n = int(sum(published["quotas"]))
    control = control_params(params, n)
    done = out / "index.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == expected_fingerprint(
        control
    ):
        return out  # a complete control of these very params (ledger fingerprint) is kept
    summary = stage_generate(control, None, progress=progress)
    if summary["quotas"] != published["quotas"]:
        raise RuntimeError("the control's quotas differ from the published dataset's")
    return out


def control_params(params: Params, n: int) -> Params:
    """The published run's params with guidance off: rejection sampling to the same quotas."""
    d = params.downstream
    return replace(
        params,
        guidance=replace(params.guidance, mode="none"),
        generate=replace(
            params.generate,
            dataset=f"{params.generate.dataset}-rejection",
            budget=max(params.generate.budget, d.control_budget * n),
        ),  # fmt: skip
        output=replace(params.output, dir=d.control_dir),
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


def train_classifier(
    params: Params, setting: str, seed: int, control: Path | None
) -> torch.nn.Module:
    """Train the label classifier on one dataset, fed by ``fairsynth.data.feed``."""
    from fairsynth.verify.classifier import build

    d = params.downstream
    space = params.attribute_space()
    synthetic = {"reference": None, "reference+fairsynth": params.output.dir,
                 "reference+rejection": str(control) if control else None}[setting]  # fmt: skip
    if setting == "reference+rejection" and control is None:
        raise ValueError("the rejection control is needed for reference+rejection")
    feed = Feed(
        synthetic, reference=params.reference.path, attributes=dict(space.attributes),
        shuffle=2000, seed=seed, reference_keys=set(reference_keys(params)),
        on_error="raise",  # an experiment on silently fewer samples would mislead
    )  # fmt: skip
    loader = make_loader(feed, batch_size=d.batch_size, num_workers=d.num_workers)
    torch.manual_seed(seed)
    model = build(d.arch, {d.label: len(space.classes(d.label))})
    opt = torch.optim.AdamW(model.parameters(), lr=d.lr, weight_decay=1e-4)
    model.train()
    step, epoch = 0, 0
    while step < d.steps:  # a fixed number of steps: a bigger dataset is not more training
        feed.set_epoch(epoch)
        for batch in loader:
            y = batch["labels"][d.label]
            if (y < 0).all():
                continue
            logits = model(batch["image"] * 2.0 - 1.0)[d.label]
            loss = F.cross_entropy(logits, y, ignore_index=-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            if step == d.steps:
                break
        epoch += 1
    return model.eval()


def run_one(
    params: Params, setting: str, seed: int, control: Path | None,
    test: tuple[torch.Tensor, dict[str, np.ndarray]],
) -> dict:  # fmt: skip
    """Train on one dataset with one seed; group metrics on the test set."""
    d = params.downstream
    images, labels = test
    model = train_classifier(params, setting, seed, control)
    pred = predict(model, images, d.label)
    groups = list(params.attribute_space().classes(d.sensitive))
    return {"setting": setting, "seed": seed,
            **group_metrics(labels[d.label], pred, labels[d.sensitive], groups)}  # fmt: skip


def write_report(params: Params, runs: list[dict], seconds: float) -> dict:
    """metrics.json (DVC metrics), runs.csv and group_accuracy.png in ``downstream.out``."""
    from fairsynth.data.plots import group_accuracy_bars

    d = params.downstream
    groups = list(params.attribute_space().classes(d.sensitive))
    report = {
        "label": d.label,
        "sensitive": d.sensitive,
        "groups": groups,
        "reference_n": d.reference_n,
        "synthetic_n": int(sum(published_index(params)["accepted"])),
        "test": d.test,
        "seeds": list(d.seeds),
        **summarize(runs, groups),
    }
    out = Path(d.out)
    shards.write_json(out / "metrics.json", report)
    write_run_record(out, {"seconds": round(seconds, 1)})  # not in metrics.json: byte-stable
    pd.DataFrame(runs).assign(by_group=lambda f: f["by_group"].map(json.dumps)).to_csv(
        out / "runs.csv", index=False
    )
    group_accuracy_bars(report, out / "group_accuracy.png")
    return report


def stage_downstream(params: Params, progress: bool = True) -> dict:
    """The whole experiment (the DVC stage; the downstream flow runs the same pieces)."""
    d = params.downstream
    d.check_attributes(params.attribute_space().names)
    t0 = time.time()
    control = build_control(params, progress=progress)
    test = test_set(params)
    runs = []
    for setting in SETTINGS:
        for seed in d.seeds:
            runs.append(run_one(params, setting, seed, control, test))
            if progress:
                print(format_run(runs[-1]), flush=True)
    return write_report(params, runs, time.time() - t0)


def format_run(m: dict) -> str:
    return (f"{m['setting']:<22} seed {m['seed']}: accuracy {m['accuracy']:.3f}, worst group "
            f"{m['worst_group']:.3f}, gap {m['gap']:.3f}")  # fmt: skip


def format_report(r: dict) -> str:
    def ci(x: dict) -> str:
        if x["low"] is None:
            return f"{x['mean']:.3f}"
        return f"{x['mean']:.3f} [{x['low']:.3f}, {x['high']:.3f}]"

    lines = [
        f"Classifier of {r['label']!r}, groups of {r['sensitive']!r}: {r['reference_n']} reference "
        f"+ {r['synthetic_n']} synthetic samples, {len(r['seeds'])} seeds, 95 % CI",
        f"{'dataset':<22}{'accuracy':>26}{'worst group':>26}{'gap':>26}",
    ]
    for name, s in r["settings"].items():
        lines.append(
            f"{name:<22}{ci(s['accuracy']):>26}{ci(s['worst_group']):>26}{ci(s['gap']):>26}"
        )
    for name, e in r["effects"].items():
        lines.append(f"effect {name:<30} worst group {ci(e['worst_group'])}, gap {ci(e['gap'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fairsynth.experiments.downstream", description=__doc__.splitlines()[0]
    )
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--show", action="store_true", help="print the saved report, run nothing")
    a = ap.parse_args(argv)
    try:
        params = load_params(a.params)
        if a.show:
            report = json.loads((Path(params.downstream.out) / "metrics.json").read_text())
        else:
            report = stage_downstream(params)
    except USER_ERRORS as exc:
        return report_error(exc)
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
