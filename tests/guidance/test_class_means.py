"""Cell means of h_t and the class-mean shift (guidance.shift)."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from fairsynth.app.config import ConfigError, parse_params
from fairsynth.app.runspec import guidance_hash
from fairsynth.app.train_adp import class_maps
from fairsynth.core.attributes import AttributeSpace
from fairsynth.guidance.adp import ADP, MEANS_FILE, ADPShape, TrainedADP
from fairsynth.guidance.class_means import (
    PRIOR_COUNT,
    CellMeans,
    cell_means,
    class_shift,
    marginal,
    nearest_step,
)
from fairsynth.guidance.guide import DistributionGuidance, GuidanceConfig
from fairsynth.guidance.trajectory_store import TrajectoryWriter, read_store

SPACE = AttributeSpace.from_dict({"skin": ["light", "dark"], "hair": ["black", "brown", "blond"]})


def _trajectories(n=40, n_rec=3, seed=0):
    """h = noise + 2 * skin + (0, 1, 3)[hair] on channel 0, and 4 on channel 1 for dark brown
    hair only (an interaction): the cell means are known. Blond is never drawn."""
    rng = np.random.default_rng(seed)
    skin = rng.integers(0, 2, n)
    hair = rng.integers(0, 2, n)
    h = torch.from_numpy(rng.normal(0, 0.1, (n, n_rec, 4, 2, 2)).astype(np.float32))
    lift = torch.from_numpy(2.0 * skin + np.array([0.0, 1.0, 3.0])[hair]).float()
    h[:, :, 0] += lift[:, None, None, None]
    h[:, :, 1] += torch.from_numpy(4.0 * (skin == 1) * (hair == 1)).float()[:, None, None, None]
    return h, torch.tensor([900, 500, 100]), {"skin": skin, "hair": hair}


def test_cell_means_are_the_mean_h_of_each_cell_and_count_its_trajectories():
    h, ts, labels = _trajectories()
    cm = cell_means(h, labels, SPACE.attributes, ts, chunk=7)  # chunks that do not divide n
    assert cm.means.shape == (2, 3, 3, 4, 2, 2) and cm.means.dtype == torch.float16
    for s in (0, 1):
        for c in (0, 1):
            members = (labels["skin"] == s) & (labels["hair"] == c)
            assert int(cm.counts[s, c]) == members.sum()
            assert torch.allclose(cm.means[s, c].float(), h[members].mean(0), atol=2e-3)
    assert cm.counts[:, 2].sum() == 0 and not cm.means[:, 2].any()  # blond: no trajectory
    assert torch.equal(cm.timesteps, ts)


def test_cell_means_read_an_on_disk_store_as_they_read_a_tensor(tmp_path):
    h, ts, labels = _trajectories(n=20)
    writer = TrajectoryWriter(tmp_path / "store")
    for start in (0, 8):
        end = 8 if start == 0 else 20
        images = np.zeros((end - start, 4, 4, 3), np.uint8)
        writer.append(h[start:end].half(), ts.tolist(), images,
                      {k: v[start:end] for k, v in labels.items()})  # fmt: skip
    writer.finish()
    store, _, stored_labels, _ = read_store(tmp_path / "store")
    from_store = cell_means(store, stored_labels, SPACE.attributes, ts, chunk=6)
    from_tensor = cell_means(h.half(), labels, SPACE.attributes, ts)
    assert torch.allclose(from_store.means.float(), from_tensor.means.float(), atol=1e-3)
    assert torch.equal(from_store.counts, from_tensor.counts)


def test_smoothing_keeps_a_well_seen_cell_and_fills_an_empty_one_from_its_classes():
    h, ts, labels = _trajectories(n=400)
    cm = cell_means(h, labels, SPACE.attributes, ts)
    smooth = cm.smoothed().view(2, 3, 3, 4, 2, 2)
    # dark brown, seen about 100 times: pulled by PRIOR_COUNT toward what its classes add up to
    # (about 3 on channel 1), it keeps most of its interaction (4)
    total, dark = h.mean(0), h[labels["skin"] == 1].mean(0)
    additive = dark + h[labels["hair"] == 1].mean(0) - total
    n, cell = float(cm.counts[1, 1]), cm.means[1, 1].float()
    assert torch.allclose(smooth[1, 1], (n * cell + PRIOR_COUNT * additive) / (n + PRIOR_COUNT),
                          atol=5e-3)  # fmt: skip
    assert float(smooth[1, 1, :, 1].mean()) > 3.6
    # blond, never seen: the overall mean plus the skin class's offset (no blond offset)
    assert torch.allclose(smooth[1, 2], dark, atol=5e-3)


def test_the_shift_moves_a_sample_along_the_skin_difference_of_its_own_hair():
    """light -> dark is +1 on dimension 0 for black hair, +1 on dimension 1 for brown hair:
    a sample read as brown-haired moves on dimension 1 only."""
    means = torch.zeros(2, 3, 2)  # (skin, hair, D)
    means[1, 0, 0] = 1.0
    means[1, 1, 1] = 1.0
    full = torch.tensor([[0, 1.0, 0, 0, 0, 0]])  # light, brown
    diff = torch.tensor([[-1.0, 1.0]])  # wanted minus predicted over skin: light -> dark
    move = class_shift(means.view(6, 2), (2, 3), (0,), diff, full)
    assert torch.allclose(move, torch.tensor([[0.0, 1.0]]))
    both = torch.tensor([[0, 0, 0, 0, 0, 0.0]])  # a move over (hair, skin) in that order
    both[0, 1] = 1.0  # hair black, skin dark wanted
    both[0, 2] = -1.0  # hair brown, skin light read
    move = class_shift(means.view(6, 2), (2, 3), (1, 0), both, full)
    assert torch.allclose(move, torch.tensor([[1.0, 0.0]]))  # to dark black from light brown
    assert nearest_step(torch.tensor([900, 500, 100]), torch.tensor(620)) == 1


def test_marginal_sums_the_other_attributes_and_follows_the_requested_order():
    full = torch.arange(6.0)[None]  # skin x hair, (light: 0 1 2, dark: 3 4 5)
    assert marginal(full, (2, 3), (0,)).tolist() == [[3.0, 12.0]]
    assert marginal(full, (2, 3), (1,)).tolist() == [[3.0, 5.0, 7.0]]
    assert marginal(full, (2, 3), (1, 0)).tolist() == [[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]]


def _adp(means: bool = True) -> TrainedADP:
    torch.manual_seed(0)
    model = (
        ADP(4, 2, {"skin": 2, "hair": 3}, ADPShape(width=8, hidden=16)).eval().requires_grad_(False)
    )
    adp = TrainedADP(model, SPACE, {})
    if means:
        h, ts, labels = _trajectories()
        adp.means = cell_means(h, labels, SPACE.attributes, ts).to("cpu")
    return adp


def test_shift_moves_a_light_batch_toward_dark_along_the_cell_means():
    adp = _adp()
    h = torch.zeros(8, 4, 2, 2)
    h[:, 0] = 0.5  # between light (about 0.5 on channel 0) and dark (about 2.5)
    config = GuidanceConfig(strength=0.0, shift=1.0, loss="chi2")
    g = DistributionGuidance(adp, ("skin",), np.array([0.0, 1.0]), config)
    g.begin_step(500, 0, 10)
    g.active = True  # strength 0 keeps the gradient step off; the shift alone acts
    moved = g.shift(h)
    assert (moved[:, 0] > h[:, 0] + 0.1).all()  # toward the dark cells' means
    assert torch.allclose(moved[:, 2:], h[:, 2:], atol=0.2)


def test_shift_without_cell_means_is_a_one_line_error_and_the_config_checks_it(tmp_path):
    with pytest.raises(ValueError, match="guidance.shift needs the ADP's class means"):
        DistributionGuidance(_adp(means=False), ("skin",), np.array([0.5, 0.5]),
                             GuidanceConfig(shift=1.0, loss="chi2"))  # fmt: skip
    # per-attribute means of an earlier version are not read: the same error, not a crash
    _adp(means=False).save(tmp_path / "adp")
    save_file({"timesteps": torch.tensor([1]), "mean.skin": torch.zeros(2, 1, 4, 2, 2)},
              tmp_path / "adp" / MEANS_FILE)  # fmt: skip
    with pytest.raises(ValueError, match="--means-only"):
        DistributionGuidance(TrainedADP.load(tmp_path / "adp"), ("skin",),
                             np.array([0.5, 0.5]), GuidanceConfig(shift=1.0, loss="chi2"))  # fmt: skip
    with pytest.raises(ConfigError, match="guidance.shift"):
        parse_params({"guidance": {"shift": -1}})
    assert parse_params({"guidance": {"shift": 1.5}}).guidance.to_config().shift == 1.5


def test_cell_means_round_trip_through_the_adp_folder_and_follow_aligned(tmp_path):
    adp = _adp()
    adp.save(tmp_path / "adp")
    assert (tmp_path / "adp" / MEANS_FILE).is_file()
    loaded = TrainedADP.load(tmp_path / "adp")
    assert torch.equal(loaded.means.timesteps, adp.means.timesteps)
    assert torch.equal(loaded.means.counts, adp.means.counts)
    assert torch.allclose(loaded.means.means, adp.means.means, atol=1e-2)  # float16 on disk
    swapped = loaded.aligned(AttributeSpace.from_dict({"skin": ["dark", "light"],
                                                       "hair": ["black", "brown", "blond"]}))  # fmt: skip
    assert torch.equal(swapped.means.means[0], loaded.means.means[1])
    assert torch.equal(swapped.means.counts[0], loaded.means.counts[1])
    assert isinstance(swapped.means, CellMeans)


def test_means_only_maps_the_params_class_order_onto_the_adps():
    params = AttributeSpace.from_dict(
        {"skin": ["dark", "light"], "hair": ["black", "brown", "blond"]}
    )
    maps = class_maps(params, SPACE)
    assert maps["skin"].tolist() == [1, 0] and maps["hair"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="'hair'"):
        class_maps(AttributeSpace.from_dict({"skin": ["light", "dark"]}), SPACE)


def test_shift_off_keeps_the_guidance_hash_runs_had_before_it(monkeypatch):
    import json

    off = parse_params({"guidance": {"loss": "chi2", "shift": 0}})
    on = parse_params({"guidance": {"loss": "chi2", "shift": 1.0}})
    assert guidance_hash(off) != guidance_hash(on)
    hashed, dumps = [], json.dumps
    monkeypatch.setattr(json, "dumps", lambda obj, **k: (hashed.append(obj), dumps(obj, **k))[1])
    guidance_hash(off)  # off, the key is left out, as in runs made before it existed
    assert "shift" not in hashed[-1]["guidance"] and "loss" in hashed[-1]["guidance"]
    guidance_hash(on)
    assert hashed[-1]["guidance"]["shift"] == 1.0
