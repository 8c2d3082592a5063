"""The downstream experiment: does fairsynth's data beat the cheap fixes for a fair classifier?

A classifier of ``downstream.label`` is trained the same way (same net, same fixed number of
steps, same seeds) on six training sets, each read once through ``fairsynth.data.feed``:

(a) ``reference``: the first ``reference_n`` samples of the biased reference;
(b) ``reference+fairsynth``: (a) + the published shards (distribution-guided, quota-checked);
(c) ``reference+rejection``: (a) + as many *rejection-sampled* unguided samples: the same model
    without guidance, the same verifier and the same per-cell quotas;
(d) ``reference-resampled``: (a), batches drawn group-balanced (each ``sensitive`` x ``label``
    cell equally often; torch's ``WeightedRandomSampler``);
(e) ``reference-reweighted``: (a), the loss weighted by inverse cell frequency;
(f) ``reference+fairsynth-resampled``: (b) drawn group-balanced.

Each is evaluated on a test set balanced over (sensitive x label) cells with Fairlearn's group
metrics (accuracy per group, worst group, gap, equalized-odds and demographic-parity
differences), for every seed; effects (b - a, b - d, b - e, f - d, c - a, b - c) are paired
over seeds with a 95 % t-interval. Two scenarios: ``main`` (``reference_n`` reference samples)
and ``hard`` (``downstream.hard``: fewer reference samples, part of their labels flipped).

    python -m fairsynth.experiments.downstream [--params params.yaml] [--show]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from fairsynth.app.config import ConfigError, Params, load_params
from fairsynth.app.errors import USER_ERRORS
from fairsynth.app.errors import report as report_error
from fairsynth.app.runspec import expected_fingerprint
from fairsynth.data import shards
from fairsynth.data.runlog import write_run_record
from fairsynth.experiments.datasets import control_params, published_index, test_set
from fairsynth.experiments.statistics import group_metrics, predict, summarize
from fairsynth.experiments.summary import format_report, format_run
from fairsynth.experiments.trainsets import (
    TrainSet,
    batches,
    inverse_cell_weights,
    read_train_set,
)
from fairsynth.experiments.workers import map_runs

# setting: (synthetic part, group-balanced batches, group-reweighted loss)
RECIPES = {
    "reference": (None, False, False),
    "reference+fairsynth": ("fairsynth", False, False),
    "reference+rejection": ("rejection", False, False),
    "reference-resampled": (None, True, False),
    "reference-reweighted": (None, False, True),
    "reference+fairsynth-resampled": ("fairsynth", True, False),
}
SETTINGS = tuple(RECIPES)


def reference_keys(params: Params, n: int | None = None) -> list[str]:
    """The first ``n`` (default ``reference_n``) keys of the reference (its labels file order)."""
    ref = Path(params.reference.path)
    labels = ref / "labels.parquet"
    if params.reference.source not in ("toyfaces", "shards") or not labels.is_file():
        raise ConfigError(
            "downstream: the reference must be webdataset shards with labels.parquet "
            f"(reference.source toyfaces or shards; {labels} missing)"
        )
    keys = pd.read_parquet(labels, columns=["key"])["key"].astype(str).tolist()
    n = params.downstream.reference_n if n is None else n
    if n > len(keys):
        raise ConfigError(f"downstream.reference_n: {n} > the reference's {len(keys)} samples")
    return keys[:n]


def control_facts(params: Params) -> dict:
    """What the control (c) holds, per cell, and what it cost, where the runs used one."""
    if not any(RECIPES[s][0] == "rejection" for s in selected_settings(params)):
        return {}
    index = shards.read_index(params.downstream.control_dir) or {}
    keys = ("cells", "quotas", "accepted", "generated", "samples_per_accepted")
    return {"control": {k: index.get(k) for k in keys}}


def build_control(params: Params, progress: bool = True) -> Path:
    """(c): rejection sampling to the published dataset's quotas, once (kept on disk)."""
    from fairsynth.app.stages.generate import stage_generate

    d = params.downstream
    published = published_index(params)
    out = Path(d.control_dir)
    control = control_params(params, published)
    done = out / "index.json"
    if done.is_file() and json.loads(done.read_text()).get("fingerprint") == expected_fingerprint(
        control
    ):
        return out  # a complete control of these very params (ledger fingerprint) is kept
    summary = stage_generate(control, None, progress=progress)
    if summary["quotas"] != published["quotas"]:
        raise RuntimeError("the control's quotas differ from the published dataset's")
    return out


@dataclass(frozen=True)
class Scenario:
    name: str
    reference_n: int
    label_noise: float = 0.0
    noise_seed: int = 0


def scenarios(params: Params) -> list[Scenario]:
    d = params.downstream
    out = [Scenario("main", d.reference_n)]
    if d.hard is not None:
        out.append(Scenario("hard", d.hard.reference_n, d.hard.label_noise, d.hard.noise_seed))
    return out


def selected_settings(params: Params) -> tuple[str, ...]:
    """``downstream.settings`` in the canonical order (default: all)."""
    chosen = params.downstream.settings
    return SETTINGS if chosen is None else tuple(s for s in SETTINGS if s in chosen)


def load_train_sets(
    params: Params, scenario: Scenario, control: Path | None, settings: tuple[str, ...] = SETTINGS
) -> dict:
    """The scenario's reference part and the synthetic parts ``settings`` use, read once."""
    d = params.downstream
    space = params.attribute_space()
    attributes = dict(space.attributes)
    n_labels = len(space.classes(d.label))
    reference = read_train_set(
        None, params.reference.path, attributes, d.label, d.sensitive,
        reference_keys=set(reference_keys(params, scenario.reference_n)),
    ).with_label_noise(scenario.label_noise, n_labels, scenario.noise_seed)  # fmt: skip
    sets = {None: reference}
    sources = {"fairsynth": params.output.dir, "rejection": str(control) if control else None}
    for part in {RECIPES[s][0] for s in settings} - {None}:
        if sources[part] is None:
            raise ValueError(f"the {part} samples are needed for reference+{part}")
        sets[part] = read_train_set(sources[part], None, attributes, d.label, d.sensitive)
    return sets


def train_classifier(params: Params, data: TrainSet, seed: int, balanced: bool = False,
                     reweighted: bool = False) -> torch.nn.Module:  # fmt: skip
    """Train the label classifier for ``downstream.steps`` steps (a bigger dataset is not more
    training) on batches drawn uniformly or group-balanced, with a plain or reweighted loss."""
    from fairsynth.verify.classifier import build

    d = params.downstream
    n_labels = len(params.attribute_space().classes(d.label))
    torch.manual_seed(seed)
    model = build(d.arch, {d.label: n_labels})
    opt = torch.optim.AdamW(model.parameters(), lr=d.lr, weight_decay=1e-4)
    weights = inverse_cell_weights(data, n_labels) if reweighted else None
    model.train()
    for idx in batches(data, d.steps, d.batch_size, n_labels, balanced, seed):
        x = data.images[idx].float() / 127.5 - 1.0
        loss = F.cross_entropy(model(x)[d.label], data.label[idx], reduction="none")
        loss = (loss * weights[idx]).mean() if weights is not None else loss.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def run_one(
    params: Params, scenario: str, setting: str, seed: int, sets: dict,
    test: tuple[torch.Tensor, dict[str, np.ndarray]],
) -> dict:  # fmt: skip
    """Train on one setting's data with one seed; group metrics on the test set."""
    d = params.downstream
    part, balanced, reweighted = RECIPES[setting]
    data = sets[None] if part is None else sets[None] + sets[part]
    images, labels = test
    model = train_classifier(params, data, seed, balanced, reweighted)
    pred = predict(model, images, d.label)
    groups = list(params.attribute_space().classes(d.sensitive))
    return {"scenario": scenario, "setting": setting, "seed": seed, "train_n": len(data),
            **group_metrics(labels[d.label], pred, labels[d.sensitive], groups)}  # fmt: skip


def write_report(
    params: Params, runs: list[dict], seconds: float, control_seconds: float | None = None
) -> dict:
    """metrics.json (DVC metrics), runs.csv and group_accuracy.png in ``downstream.out``."""
    from fairsynth.data.plots import group_accuracy_bars

    d = params.downstream
    groups = list(params.attribute_space().classes(d.sensitive))
    report = {
        "label": d.label,
        "sensitive": d.sensitive,
        "groups": groups,
        "synthetic_n": int(sum(published_index(params)["accepted"])),
        **control_facts(params),
        "test": d.test,
        "seeds": list(d.seeds),
        "arch": d.arch,
        "steps": d.steps,
        "scenarios": {
            sc.name: {
                "reference_n": sc.reference_n,
                "label_noise": sc.label_noise,
                **summarize([r for r in runs if r["scenario"] == sc.name], groups),
            }
            for sc in scenarios(params)
        },
    }
    out = Path(d.out)
    shards.write_json(out / "metrics.json", report)
    facts = {"seconds": round(seconds, 1)}  # run facts, not in metrics.json: byte-stable
    if control_seconds is not None:  # ~0 where a control of the same fingerprint was kept
        facts["control_seconds"] = round(control_seconds, 1)
    write_run_record(out, facts)
    frame = pd.DataFrame(runs)
    for column in ("by_group", "rates_by_group"):
        frame[column] = frame[column].map(lambda v: json.dumps(v, sort_keys=True))
    shards.write_atomic(out / "runs.csv", frame.to_csv(index=False).encode())
    group_accuracy_bars(report, out / "group_accuracy.png")
    return report


def stage_downstream(params: Params, progress: bool = True) -> dict:
    """The whole experiment (the DVC stage; the downstream flow runs the same pieces)."""
    d = params.downstream
    d.check_attributes(params.attribute_space().names)
    t0 = time.time()
    chosen = selected_settings(params)
    needs_control = any(RECIPES[s][0] == "rejection" for s in chosen)
    control = build_control(params, progress=progress) if needs_control else None
    control_seconds = time.time() - t0 if needs_control else None
    test = test_set(params)
    sets = {sc.name: load_train_sets(params, sc, control, chosen) for sc in scenarios(params)}
    jobs = [(sc, setting, seed) for sc in sets for setting in chosen for seed in d.seeds]
    runs = []
    for run in map_runs(run_one, params, sets, test, jobs, d.workers):
        runs.append(run)
        if progress:
            print(format_run(run), flush=True)
    return write_report(params, runs, time.time() - t0, control_seconds)


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
