"""Class means of h_t and the class-mean shift (guidance.shift)."""

import numpy as np
import pytest
import torch

from fairsynth.app.config import ConfigError, parse_params
from fairsynth.app.runspec import guidance_hash
from fairsynth.core.attributes import AttributeSpace
from fairsynth.guidance.adp import ADP, MEANS_FILE, TrainedADP
from fairsynth.guidance.class_means import class_means, class_shift, nearest_step
from fairsynth.guidance.guide import DistributionGuidance, GuidanceConfig
from fairsynth.guidance.trajectory_store import TrajectoryWriter, read_store

SPACE = AttributeSpace.from_dict({"skin": ["light", "dark"], "hair": ["black", "brown", "blond"]})


def _trajectories(n=40, n_rec=3, seed=0):
    """h = noise + 2 * skin + (0, 1, 3)[hair] on channel 0: the class means are known."""
    rng = np.random.default_rng(seed)
    skin = rng.integers(0, 2, n)
    hair = rng.integers(0, 2, n)  # blond never drawn
    h = torch.from_numpy(rng.normal(0, 0.1, (n, n_rec, 4, 2, 2)).astype(np.float32))
    h[:, :, 0] += torch.from_numpy(2.0 * skin + np.array([0.0, 1.0, 3.0])[hair]).float()[
        :, None, None, None
    ]
    return h, torch.tensor([900, 500, 100]), {"skin": skin, "hair": hair}


def test_class_means_are_the_per_class_means_and_an_empty_class_gets_the_overall_mean():
    h, ts, labels = _trajectories()
    means = class_means(h, labels, SPACE, chunk=7)  # chunks that do not divide n
    for c in (0, 1):
        want = h[labels["skin"] == c].mean(0)
        assert torch.allclose(means["skin"][c].float(), want, atol=2e-3)
    assert torch.allclose(means["hair"][2].float(), h.mean(0), atol=2e-3)  # blond: none
    dark_minus_light = (means["skin"][1] - means["skin"][0]).float()[:, 0].mean()
    assert abs(float(dark_minus_light) - 2.0) < 0.3


def test_class_means_read_an_on_disk_store_as_they_read_a_tensor(tmp_path):
    h, ts, labels = _trajectories(n=20)
    writer = TrajectoryWriter(tmp_path / "store")
    for start in (0, 8):
        end = 8 if start == 0 else 20
        images = np.zeros((end - start, 4, 4, 3), np.uint8)
        writer.append(h[start:end].half(), ts.tolist(), images,
                      {k: v[start:end] for k, v in labels.items()})  # fmt: skip
    writer.finish()
    store, _, stored_labels, _ = read_store(tmp_path / "store")
    from_store = class_means(store, stored_labels, SPACE, chunk=6)
    from_tensor = class_means(h.half(), labels, SPACE)
    for name in SPACE.names:
        assert torch.allclose(from_store[name].float(), from_tensor[name].float(), atol=1e-3)


def test_class_shift_moves_each_sample_by_what_the_plan_asks_of_it():
    means = {
        "skin": torch.stack([torch.zeros(3, 2), torch.ones(3, 2)]),  # (classes, steps, dim)
        "hair": torch.zeros(3, 3, 2),
    }
    probs = torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 1.0, 0, 0]])  # light·black, dark·black
    wanted = torch.tensor([[0, 0, 0, 1.0, 0, 0], [0, 0, 0, 1.0, 0, 0]])  # both dark·black
    move = class_shift(means, 1, ("skin", "hair"), (2, 3), wanted, probs)
    assert torch.allclose(move, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
    assert nearest_step(torch.tensor([900, 500, 100]), torch.tensor(620)) == 1


def _adp(means: bool = True) -> TrainedADP:
    torch.manual_seed(0)
    model = ADP(4, 2, {"skin": 2, "hair": 3}, width=8, hidden=16).eval().requires_grad_(False)
    adp = TrainedADP(model, SPACE, {})
    if means:
        h, ts, labels = _trajectories()
        adp.means, adp.mean_timesteps = class_means(h, labels, SPACE), ts
    return adp


def test_shift_moves_a_light_batch_toward_dark_along_the_class_means():
    adp = _adp()
    h = torch.zeros(8, 4, 2, 2)
    h[:, 0] = 0.5  # between light (about 0.5 on channel 0) and dark (about 2.5)
    config = GuidanceConfig(strength=0.0, shift=1.0)
    g = DistributionGuidance(adp, ("skin",), np.array([0.0, 1.0]), config)
    g.begin_step(500, 0, 10)
    g.active = True  # strength 0 keeps the gradient step off; the shift alone acts
    moved = g.shift(h)
    assert (moved[:, 0] > h[:, 0] + 0.1).all()  # toward the dark class mean
    assert torch.allclose(moved[:, 1:], h[:, 1:], atol=0.2)


def test_shift_without_class_means_is_a_one_line_error_and_the_config_checks_it():
    with pytest.raises(ValueError, match="guidance.shift needs the ADP's class means"):
        DistributionGuidance(_adp(means=False), ("skin",), np.array([0.5, 0.5]),
                             GuidanceConfig(shift=1.0))  # fmt: skip
    with pytest.raises(ConfigError, match="guidance.shift"):
        parse_params({"guidance": {"shift": -1}})
    assert parse_params({"guidance": {"shift": 1.5}}).guidance.to_config().shift == 1.5


def test_class_means_round_trip_through_the_adp_folder_and_follow_aligned(tmp_path):
    adp = _adp()
    adp.save(tmp_path / "adp")
    assert (tmp_path / "adp" / MEANS_FILE).is_file()
    loaded = TrainedADP.load(tmp_path / "adp")
    assert torch.equal(loaded.mean_timesteps, adp.mean_timesteps)
    for name in SPACE.names:
        assert torch.equal(loaded.means[name], adp.means[name])
    swapped = loaded.aligned(AttributeSpace.from_dict({"skin": ["dark", "light"],
                                                       "hair": ["black", "brown", "blond"]}))  # fmt: skip
    assert torch.equal(swapped.means["skin"][0], adp.means["skin"][1])


def test_shift_off_keeps_the_guidance_hash_runs_had_before_it():
    plain = parse_params({})
    assert guidance_hash(parse_params({"guidance": {"shift": 0}})) == guidance_hash(plain)
    assert guidance_hash(parse_params({"guidance": {"shift": 1.0}})) != guidance_hash(plain)
