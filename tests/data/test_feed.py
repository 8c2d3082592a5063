"""The training-data feed: round trip against plain webdataset, mixing with the reference,
multi-worker loading, epochs, DVC URLs, and only accepted samples."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds

from fairsynth.app.config import ConfigError, parse_params, replace
from fairsynth.app.stages.generate import stage_generate
from fairsynth.app.stages.reference import stage_reference
from fairsynth.data import tario
from fairsynth.data.feed import Feed, expand_sources, make_loader
from fairsynth.data.runlog import read_run_record
from tests.factories import tiny_params


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A tiny published run (toy verifier on a random tiny model) and a tiny reference."""
    tmp = tmp_path_factory.mktemp("feed")
    torch.manual_seed(0)
    from diffusers import DDPMScheduler, UNet2DModel

    from fairsynth.core.attributes import AttributeSpace
    from fairsynth.diffusion.unconditional import DiffusionModel
    from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP
    from fairsynth.toyfaces.render import ATTRIBUTES

    unet = UNet2DModel(
        sample_size=16, in_channels=12, out_channels=12, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
    ).eval()  # fmt: skip
    sched = DDPMScheduler(num_train_timesteps=1000, clip_sample=True)
    DiffusionModel(unet, dict(sched.config), pixel_unshuffle=2).save(tmp / "model")
    adp = ADP(16, 8, {k: len(v) for k, v in ATTRIBUTES.items()}, ADPShape(width=8, hidden=16))
    TrainedADP(adp, AttributeSpace.from_dict(ATTRIBUTES), {}).save(tmp / "adp")
    params = tiny_params(tmp, None, gen="{mode: standalone, n: 6, budget: 30, seed: 3, min_batch: 2}")
    stage_reference(params)
    stage_generate(params, None, progress=False)
    return params, tmp


def _keys(ds):
    return [s["__key__"] for s in ds]


def test_feed_round_trips_with_plain_webdataset(published):
    params, tmp = published
    out = tmp / "out"
    plain = wds.WebDataset(
        sorted(str(p) for p in out.glob("*.tar")), shardshuffle=False, empty_check=False
    )
    expected = {s["__key__"]: json.loads(s["json"]) for s in plain}
    feed = Feed(out, shuffle=0)
    seen = list(feed)
    assert [s["__key__"] for s in seen] == list(expected)  # same samples, same order
    frame = pd.read_parquet(out / "manifest.parquet")
    assert set(expected) == set(frame.loc[frame["accepted"], "key"])  # only accepted ones
    classes = {"light": 0, "dark": 1}
    for s in seen:
        assert s["labels"]["skin"].item() == classes[expected[s["__key__"]]["skin"]]
        assert s["labels"]["hair"].item() == -1  # not a guided attribute: not labelled
        assert s["synthetic"].item() is True
        assert s["image"].shape == (3, 32, 32) and 0.0 <= s["image"].min() <= s["image"].max() <= 1
    # brace notation names the same shards as the folder
    shards = sorted(p.name for p in out.glob("*.tar"))
    brace = str(out / f"fairsynth-{{000000..{len(shards) - 1:06d}}}.tar")
    assert expand_sources(brace) == expand_sources(out)


def test_feed_mixes_reference_subset_and_flags_synthetic(published):
    params, tmp = published
    labels = pd.read_parquet(tmp / "ref" / "labels.parquet")
    subset = set(labels["key"][:25])
    feed = Feed(tmp / "out", reference=tmp / "ref", reference_keys=subset, shuffle=50, seed=1)
    seen = list(feed)
    ref = [s for s in seen if not s["synthetic"]]
    assert {s["__key__"] for s in ref} == subset
    by_key = labels.set_index("key")
    hair = {"black": 0, "brown": 1, "blond": 2}
    assert all(s["labels"]["hair"].item() == hair[by_key.loc[s["__key__"], "hair"]] for s in ref)
    n_synth = len(list(Feed(tmp / "out", shuffle=0)))
    assert len(seen) == 25 + n_synth


def test_loader_workers_and_epochs(published):
    params, tmp = published
    feed = Feed(tmp / "out", reference=tmp / "ref", shuffle=100, seed=3)
    everything = sorted(s["__key__"] for s in Feed(tmp / "out", reference=tmp / "ref", shuffle=0))
    orders = []
    for epoch in range(2):
        feed.set_epoch(epoch)
        keys = [k for b in make_loader(feed, batch_size=8, num_workers=2) for k in b["__key__"]]
        assert sorted(keys) == everything  # each sample once per epoch across 2 workers
        orders.append(keys)
    assert orders[0] != orders[1]  # a new order each epoch
    feed.set_epoch(1)
    again = [k for b in make_loader(feed, batch_size=8, num_workers=2) for k in b["__key__"]]
    assert again == orders[1]  # ... reproducible for the same seed and epoch
    batch = next(iter(make_loader(feed, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["synthetic"].dtype == torch.bool


def test_rejected_samples_are_not_fed(tmp_path):
    img = np.zeros((32, 32, 3), np.uint8)
    tario.write_shard(
        tmp_path / "mixed-000000.tar",
        [
            {"__key__": "a", "png": img, "json": {"skin": "dark", "accepted": True}},
            {"__key__": "b", "png": img, "json": {"skin": "light", "accepted": False}},
            {"__key__": "c", "png": img, "json": {"skin": "light"}},
        ],
    )
    assert [s["__key__"] for s in Feed(tmp_path, shuffle=0)] == ["a", "c"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no .tar shards"):
        Feed(tmp_path / "empty")


@pytest.mark.slow
def test_feed_reads_dvc_tracked_shards_from_the_cache(published, tmp_path):
    """``dvc://`` URLs: shards tracked by DVC, read through DVCFileSystem even when the
    workspace copy is gone (as after a fresh clone with only the cache or a remote)."""
    _, tmp = published
    repo = tmp_path / "repo"
    shutil.copytree(
        tmp / "out", repo / "shards", ignore=shutil.ignore_patterns("*.parquet", "plots")
    )
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]  # this interpreter's DVC, whatever is on PATH
    for cmd in (["git", "init", "-q"], [*dvc, "init", "-q"], [*dvc, "add", "-q", "shards"]):
        subprocess.run(cmd, cwd=repo, check=True, env=env)
    local = sorted(p.name for p in (repo / "shards").glob("*.tar"))
    expected = _keys(Feed(repo / "shards", shuffle=0))
    shutil.rmtree(repo / "shards")
    urls = [f"dvc://shards/{name}?repo={repo}" for name in local]
    assert _keys(Feed(urls, shuffle=0)) == expected


def test_group_metrics_are_fairlearns_per_group_accuracy():
    from fairsynth.experiments.downstream import group_metrics, summarize

    y_true = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    y_pred = np.array([0, 1, 0, 0, 1, 1, 1, 1])
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    m = group_metrics(y_true, y_pred, groups, ["light", "dark"])
    assert m["by_group"] == {"light": 0.75, "dark": 0.75} and m["gap"] == 0.0
    # light: TPR 1/2, FPR 0, selection 1/4; dark: TPR 1, FPR 1, selection 1
    assert m["rates_by_group"]["light"] == {"selection_rate": 0.25, "tpr": 0.5, "fpr": 0.0}
    assert m["rates_by_group"]["dark"] == {"selection_rate": 1.0, "tpr": 1.0, "fpr": 1.0}
    assert m["equalized_odds_difference"] == 1.0  # max(|TPR gap| 0.5, |FPR gap| 1.0)
    assert m["demographic_parity_difference"] == 0.75
    m = group_metrics(y_true, np.where(groups == 1, 1 - y_true, y_true), groups, ["light", "dark"])
    assert m["by_group"] == {"light": 1.0, "dark": 0.0}
    assert m["worst_group"] == 0.0 and m["gap"] == 1.0 and m["accuracy"] == 0.5
    three = group_metrics(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 1]), np.array([0, 0, 1, 1]),
                          ["light", "dark"])  # fmt: skip
    assert three["equalized_odds_difference"] is None and three["worst_group"] == 0.5
    runs = [
        {"setting": s, "seed": k, "accuracy": a, "worst_group": a, "gap": 0.1,
         "equalized_odds_difference": 0.2, "demographic_parity_difference": 0.1,
         "by_group": {"light": a, "dark": a}}
        for s, base in (("reference", 0.5), ("reference+fairsynth", 0.7),
                        ("reference-resampled", 0.6)) for k, a in
        enumerate([base, base + 0.1, base + 0.2])
    ]  # fmt: skip
    effects = summarize(runs, ["light", "dark"])["effects"]
    effect = effects["fairsynth_vs_reference"]
    assert effect["worst_group"]["mean"] == pytest.approx(0.2)  # paired per seed: no spread
    assert effect["worst_group"]["low"] == pytest.approx(0.2)
    assert effects["fairsynth_vs_resampling"]["worst_group"]["mean"] == pytest.approx(0.1)
    assert effects["fairsynth_vs_resampling"]["equalized_odds_difference"]["mean"] == 0.0
    assert "fairsynth_vs_reweighting" not in effects  # no reweighted runs: no such effect


def test_resampling_balances_cells_and_reweighting_inverts_their_frequency():
    from fairsynth.experiments.trainsets import TrainSet, batches, inverse_cell_weights

    label = torch.tensor([0] * 90 + [1] * 10)
    sensitive = torch.tensor([0] * 60 + [1] * 30 + [0] * 8 + [1] * 2)
    data = TrainSet(torch.zeros(100, 3, 4, 4, dtype=torch.uint8), label, sensitive,
                    torch.zeros(100, dtype=torch.bool))  # fmt: skip
    drawn = torch.cat(list(batches(data, 200, 50, 2, balanced=True, seed=0)))
    share = torch.bincount(data.cells(2)[drawn], minlength=4).float() / len(drawn)
    assert torch.allclose(share, torch.full((4,), 0.25), atol=0.02), share  # each cell 1/4
    plain = torch.cat(list(batches(data, 200, 50, 2, balanced=False, seed=0)))
    assert torch.bincount(data.cells(2)[plain], minlength=4)[3] / len(plain) < 0.05  # 2 %
    again = torch.cat(list(batches(data, 200, 50, 2, balanced=True, seed=0)))
    assert torch.equal(drawn, again)  # the seed decides the order
    w = inverse_cell_weights(data, 2)
    assert w.mean().item() == pytest.approx(1.0)
    per_cell = torch.zeros(4).index_add_(0, data.cells(2), w)  # every cell's total weight equal
    assert torch.allclose(per_cell, per_cell[0].expand(4))
    noisy = data.with_label_noise(0.2, 2, seed=1)
    assert int((noisy.label != data.label).sum()) == 20
    assert torch.equal(noisy.label, data.with_label_noise(0.2, 2, seed=1).label)


@pytest.mark.slow
def test_downstream_stage_tiny(published, tmp_path):

    from fairsynth.app.config import HardSetting
    from fairsynth.experiments.downstream import SETTINGS, stage_downstream

    params, tmp = published
    d = replace(
        params.downstream, label="skin", sensitive="eyeglasses", reference_n=25,
        control_dir=str(tmp_path / "rejection"), control_budget=0.5, out=str(tmp_path / "down"),
        test_per_cell=6, seeds=[0, 1], steps=3, batch_size=16,
        hard=HardSetting(reference_n=12, label_noise=0.25),
    )  # fmt: skip
    report = stage_downstream(replace(params, downstream=d), progress=False)
    assert list(report["scenarios"]) == ["main", "hard"]
    main, hard = report["scenarios"]["main"], report["scenarios"]["hard"]
    assert list(main["settings"]) == list(SETTINGS) == list(hard["settings"])
    assert set(main["effects"]) == {
        "fairsynth_vs_reference", "fairsynth_vs_resampling", "fairsynth_vs_reweighting",
        "fairsynth_resampled_vs_resampling", "rejection_vs_reference", "fairsynth_vs_rejection",
    }  # fmt: skip
    assert hard["reference_n"] == 12 and hard["label_noise"] == 0.25
    runs = pd.read_csv(tmp_path / "down" / "runs.csv")
    assert len(runs) == 2 * 6 * 2 and set(runs["seed"]) == {0, 1}
    assert {"equalized_odds_difference", "demographic_parity_difference"} <= set(runs.columns)
    reference_only = runs[(runs["setting"] == "reference")]
    assert set(reference_only.groupby("scenario")["train_n"].first()) == {25, 12}
    with_synthetic = runs[(runs["setting"] == "reference+fairsynth") & (runs["scenario"] == "main")]
    # a sample trains when both its label and its group are known (this tiny run's verifier
    # judged skin only: its samples have no eyeglasses class, so none of them can)
    metas = [
        json.loads(s["json"]) for p in (tmp / "out").glob("*.tar") for s in tario.iter_shard(p)
    ]
    both = sum("skin" in m and "eyeglasses" in m for m in metas)
    assert set(with_synthetic["train_n"]) == {25 + both}
    control = json.loads((tmp_path / "rejection" / "index.json").read_text())
    published = json.loads((tmp / "out" / "index.json").read_text())
    assert control["quotas"] == published["quotas"]
    # (c) costs at most control_budget x what the published run generated; the report says
    # what it holds
    assert 0 < control["generated"] <= -(-published["generated"] // 2)
    assert report["control"]["accepted"] == control["accepted"]
    assert report["control"]["generated"] == control["generated"]
    frame = pd.read_parquet(tmp_path / "rejection" / "manifest.parquet")
    assert set(frame["guidance_mode"]) == {"none"}
    assert (tmp_path / "down" / "group_accuracy.png").is_file()
    assert json.loads((tmp_path / "down" / "metrics.json").read_text())["seeds"] == [0, 1]
    facts = read_run_record(tmp_path / "down")  # the control's share of the stage's time
    assert 0 < facts["control_seconds"] <= facts["seconds"]
    # two worker processes (above) or this one: the same figures
    one = replace(d, workers=1, out=str(tmp_path / "one"))
    assert stage_downstream(replace(params, downstream=one), progress=False) == report
    pd.testing.assert_frame_equal(runs, pd.read_csv(tmp_path / "one" / "runs.csv"))


@pytest.mark.slow
def test_downstream_flow_tiny(published, tmp_path):
    from prefect.testing.utilities import prefect_test_harness

    from flows.downstream import downstream

    params, tmp = published
    text = (tmp / "params.yaml").read_text() + (
        "downstream: {label: skin, sensitive: eyeglasses, reference_n: 20, control_budget: 4, "
        f"control_dir: {tmp_path / 'rejection'}, out: {tmp_path / 'down'}, test_per_cell: 4, "
        "seeds: [0, 1, 2], steps: 3, batch_size: 16, hard: null}\n"
    )
    (tmp_path / "params.yaml").write_text(text)
    with prefect_test_harness(server_startup_timeout=120):
        report = downstream(str(tmp_path / "params.yaml"))
    assert report["seeds"] == [0, 1, 2] and list(report["scenarios"]) == ["main"]
    assert len(report["scenarios"]["main"]["settings"]) == 6


def test_downstream_settings_choose_what_runs_and_skip_the_control(published, tmp_path):
    from fairsynth.experiments.downstream import stage_downstream

    params, tmp = published
    d = replace(
        params.downstream, label="skin", sensitive="eyeglasses", reference_n=20,
        control_dir=str(tmp_path / "rejection"), out=str(tmp_path / "down"), test_per_cell=4,
        seeds=[0, 1], steps=2, batch_size=8, hard=None, workers=1,
        settings=["reference-reweighted", "reference"],
    )  # fmt: skip
    report = stage_downstream(replace(params, downstream=d), progress=False)
    assert list(report["scenarios"]["main"]["settings"]) == ["reference", "reference-reweighted"]
    assert not (tmp_path / "rejection").exists()  # no rejection setting: no control made
    with pytest.raises(ConfigError, match=r"downstream\.settings: unknown setting 'oversampled'"):
        parse_params({"downstream": {"settings": ["oversampled"]}})
    assert (tmp_path / "down" / "metrics.json").is_file()


def test_feed_labels_index_the_given_classes(tmp_path):
    """Dark and light samples: the label index is the class's position in ``attributes``."""
    from fairsynth.toyfaces.render import render_batch

    images, _ = render_batch(4, seed=2)
    skins = ["dark", "light", "dark", "light"]
    tario.write_shard(tmp_path / "s-000000.tar", [
        {"__key__": f"k{i}", "png": im, "json": {"skin": sk, "eyeglasses": "yes"}, "cls": 0}
        for i, (im, sk) in enumerate(zip(images, skins, strict=True))
    ])  # fmt: skip
    got = {s["__key__"]: s["labels"]["skin"].item() for s in Feed(tmp_path, shuffle=0)}
    assert got == {"k0": 1, "k1": 0, "k2": 1, "k3": 0}
    reordered = Feed(tmp_path, attributes={"skin": ["dark", "light"]}, shuffle=0)
    assert {s["__key__"]: s["labels"]["skin"].item() for s in reordered} == {
        "k0": 0, "k1": 1, "k2": 0, "k3": 1
    }  # fmt: skip
    assert all(s["labels"]["eyeglasses"].item() == 1 for s in Feed(tmp_path, shuffle=0))


def test_a_regeneration_in_progress_still_feeds_the_last_publication(published, tmp_path):
    """A run with a changed recipe removes ``index.json`` first and replaces the shards only
    when it publishes: until then readers get the last publication (``versions/``), not an
    error, and not a folder glob that could mix in other shards."""
    from fairsynth.experiments.datasets import published_index

    params, tmp = published
    out = tmp_path / "out"
    shutil.copytree(tmp / "out", out)
    before = _keys(Feed(out, shuffle=0))
    index = json.loads((out / "index.json").read_text())
    (out / "index.json").unlink()  # what generate_dataset does first on a new fingerprint
    (out / "fairsynth-000099.tar").write_bytes((out / "fairsynth-000000.tar").read_bytes())
    assert _keys(Feed(out, shuffle=0)) == before
    assert expand_sources(out) == [str(out / e["shard"]) for e in index["shards"]]
    moved = replace(params, output=replace(params.output, dir=str(out)))
    assert published_index(moved) == index
    shutil.rmtree(out / "versions")
    with pytest.raises(FileNotFoundError, match="index.json not found"):
        published_index(moved)
