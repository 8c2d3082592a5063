import numpy as np
import pytest
import torch

from fairsynth.core.attributes import AttributeSpace
from fairsynth.core.quotas import largest_remainder
from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample
from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP
from fairsynth.guidance.guide import (
    DistributionGuidance,
    GuidanceConfig,
    SampleGuidance,
    assign_cells,
    divergence,
    transport_plan,
)
from fairsynth.guidance.training import ADPTraining, train_adp
from fairsynth.guidance.trajectories import Recording, record_trajectories

SPACE = AttributeSpace.from_dict({"skin": ["light", "dark"], "hair": ["black", "brown", "blond"]})


def _adp(channels=16, spatial=8) -> TrainedADP:
    torch.manual_seed(0)
    model = (
        ADP(channels, spatial, {"skin": 2, "hair": 3}, ADPShape(width=8, hidden=16))
        .eval()
        .requires_grad_(False)
    )
    return TrainedADP(model, SPACE, {})


def test_distribution_guidance_descends_the_divergence():
    adp = _adp()
    g = DistributionGuidance(
        adp, ("skin",), np.array([0.1, 0.9]), GuidanceConfig(strength=5000.0, loss="kl", shift=0.0)
    )
    g.begin_step(500, 0, 10)
    h = torch.randn(32, 16, 8, 8)
    losses = []
    for _ in range(15):
        h = g.edit(h)
        losses.append(g.last_loss)
    assert losses[-1] < losses[0] * 0.85
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:], strict=False))


def test_the_transport_plan_meets_the_target_and_flips_the_nearest_samples():
    # 10 samples, increasingly likely "yes"; the target wants 30 % "yes": the three most likely
    p_yes = torch.linspace(0.05, 0.45, 10)
    probs = torch.stack([1 - p_yes, p_yes], dim=1)
    plan = transport_plan(probs, torch.tensor([0.7, 0.3]), eps=0.05, iters=200)
    assert torch.allclose(plan.sum(1), torch.ones(10), atol=1e-5)
    assert torch.allclose(plan.mean(0), torch.tensor([0.7, 0.3]), atol=1e-3)
    assert (plan[7:, 1] > 0.85).all() and (plan[:6, 1] < 0.01).all()
    # at eps 1 a row is the prediction reweighted per cell (a prior shift)
    soft = transport_plan(probs, torch.tensor([0.7, 0.3]), eps=1.0, iters=200)
    ratio = soft / probs
    assert torch.allclose(ratio / ratio[:, :1], (ratio / ratio[:, :1])[0].expand(10, 2), atol=1e-4)


@pytest.mark.parametrize("eps", [0.5, 1.0])
def test_the_transport_plan_holds_where_no_sample_predicts_a_wanted_cell(eps):
    # confident samples (p down to 1e-30) and half the target on a cell none of them predicts:
    # the plan stays finite and its columns still carry the target's mass
    torch.manual_seed(0)
    logits = torch.randn(64, 12) * 20
    logits[:, 5] -= 60
    target = torch.rand(12)
    target[3], target[5] = 0.0, 0.5 * target.sum()
    target = target / target.sum()
    plan = transport_plan(torch.softmax(logits, 1), target, eps=eps, iters=300)
    assert torch.isfinite(plan).all()
    assert torch.allclose(plan.sum(1), torch.ones(64), atol=1e-5)
    assert torch.allclose(plan.mean(0), target, atol=2e-3)


def test_transport_guidance_descends_the_batch_divergence():
    adp = _adp()
    target = np.array([0.1, 0.9])
    g = DistributionGuidance(
        adp, ("skin",), target, GuidanceConfig(strength=5000.0, loss="ot", shift=0.0)
    )
    g.begin_step(500, 0, 10)
    h = torch.randn(32, 16, 8, 8)
    gaps = []
    for _ in range(10):
        h = g.edit(h)
        gaps.append(float((g.last_probs.mean(0) - torch.tensor(target)).abs().sum()))
    assert gaps[-1] < gaps[0] * 0.9


@pytest.mark.parametrize("mode", ["distribution", "sample"])
def test_per_sample_step_is_batch_size_invariant(mode):
    adp = _adp()
    cfg = GuidanceConfig(mode=mode, strength=0.3, loss="chi2", shift=0.0)
    row = torch.randn(1, 16, 8, 8)
    steps = []
    for n in (4, 16):
        h = row.expand(n, -1, -1, -1).clone()
        if mode == "distribution":
            g = DistributionGuidance(adp, ("skin", "hair"), np.full(6, 1 / 6), cfg)
        else:
            g = SampleGuidance(adp, ("skin", "hair"), np.zeros(n, dtype=int), cfg)
        g.begin_step(300, 0, 10)
        steps.append((g.edit(h) - h)[0])
    assert steps[0].abs().max() > 0
    assert torch.allclose(steps[0], steps[1], atol=1e-6)


def test_window_and_zero_strength_leave_h_alone():
    adp = _adp()
    h = torch.randn(8, 16, 8, 8)
    g = DistributionGuidance(
        adp,
        ("skin",),
        np.array([0.5, 0.5]),
        GuidanceConfig(window=(0.5, 1.0), loss="chi2", shift=0.0),
    )
    g.begin_step(900, 0, 10)
    assert torch.equal(g.edit(h), h)
    g.begin_step(100, 9, 10)
    assert not torch.equal(g.edit(h), h)
    g0 = DistributionGuidance(
        adp, ("skin",), np.array([0.5, 0.5]), GuidanceConfig(strength=0.0, loss="chi2", shift=0.0)
    )
    g0.begin_step(100, 9, 10)
    assert torch.equal(g0.edit(h), h)


def test_guided_sampling_edits_h_by_its_gradient_only(tiny_model):
    adp = _adp()
    adp_weights = {k: v.clone() for k, v in adp.model.state_dict().items()}
    unet_weights = {k: v.clone() for k, v in tiny_model.unet.state_dict().items()}
    three = SamplerSettings(steps=3)
    base = sample(tiny_model, 4, batch_generator(1, 0), three)
    zero = DistributionGuidance(
        adp, ("skin",), np.array([0.5, 0.5]), GuidanceConfig(strength=0.0, loss="chi2", shift=0.0)
    )
    assert torch.equal(sample(tiny_model, 4, batch_generator(1, 0), three, guidance=zero), base)
    config = GuidanceConfig(
        strength=50.0, max_step=0.0, loss="chi2", shift=0.0
    )  # no trust region: the raw step
    strong = DistributionGuidance(adp, ("skin",), np.array([0.0, 1.0]), config)
    guided = sample(tiny_model, 4, batch_generator(1, 0), three, guidance=strong)
    assert not torch.allclose(guided, base)
    # neither network learns anything while guiding
    assert all(torch.equal(v, adp_weights[k]) for k, v in adp.model.state_dict().items())
    assert all(torch.equal(v, unet_weights[k]) for k, v in tiny_model.unet.state_dict().items())
    # one edit, by hand: h - strength * N * d/dh chi2(mean_i softmax(ADP(h_i, t)), q)
    torch.manual_seed(3)
    h = torch.randn(4, 16, 8, 8)
    strong.begin_step(500, 1, 3)
    edited = strong.edit(h)
    leaf = h.clone().requires_grad_(True)
    with torch.enable_grad():
        p = torch.softmax(adp.model(leaf, torch.as_tensor(500))["skin"], -1).mean(0)
        q = torch.tensor([0.0, 1.0])
        chi2 = ((p - q) ** 2 / torch.tensor([1e-3, 1.0])).sum()
        (grad,) = torch.autograd.grad(chi2, leaf)
    assert grad.abs().max() > 0
    assert torch.allclose(edited, h - 50.0 * 4 * grad, atol=1e-5)


def test_divergences_tolerate_zero_target_cells():
    p = torch.tensor([0.2, 0.5, 0.3], requires_grad=True)
    q = torch.tensor([0.0, 0.5, 0.5])
    for kind in ("chi2", "kl", "l2"):
        d = divergence(p, q, kind)
        assert torch.isfinite(d)
        (g,) = torch.autograd.grad(d, p)
        assert torch.isfinite(g).all()
    assert float(divergence(q, q, "chi2")) == pytest.approx(0)


def test_config_validation():
    for bad in (
        dict(mode="magic"),
        dict(loss="js"),
        dict(strength=-1),
        dict(window=(0.8, 0.2)),
        dict(temperature=0),
    ):
        with pytest.raises(ValueError, match="guidance"):
            GuidanceConfig(**bad)


def test_largest_remainder_and_assignment():
    assert largest_remainder(np.array([0.5, 0.3, 0.2]), 7).tolist() == [4, 2, 1]
    assert largest_remainder(np.array([1 / 3] * 3), 10).sum() == 10
    cells = assign_cells(np.array([0.25, 0.75]), 8, np.random.default_rng(0))
    assert sorted(cells.tolist()) == [0, 0, 1, 1, 1, 1, 1, 1]


def test_record_train_save_load_adp(tmp_path, tiny_model):
    def labeller(images):
        bright = images.mean(axis=(1, 2, 3)) > images.mean()
        return {
            "skin": np.eye(2)[bright.astype(int)],
            "hair": np.eye(3)[np.zeros(len(images), int)],
        }

    recording = Recording(settings=SamplerSettings(steps=4), record_every=2, batch_size=6)
    traj = record_trajectories(tiny_model, labeller, n=12, seed=0, recording=recording)
    assert traj.h.shape == (12, 2, 16, 8, 8) and traj.h.dtype == torch.float16
    assert traj.timesteps.tolist() == sorted(traj.timesteps.tolist(), reverse=True)
    traj.save(tmp_path / "traj.safetensors")
    again = type(traj).load(tmp_path / "traj.safetensors")
    assert torch.equal(again.h, traj.h) and torch.equal(again.timesteps, traj.timesteps)
    assert (again.images == traj.images).all() and again.labels.keys() == traj.labels.keys()
    assert all((again.labels[k] == traj.labels[k]).all() for k in traj.labels)
    trained = train_adp(
        traj, SPACE, ADPTraining(epochs=2, batch_size=8, width=8, hidden=16, dropout=0.1)
    )
    bands = trained.meta["heldout_accuracy_by_band"]
    assert [b["n"] for b in bands] and sum(b["n"] for b in bands) == 2 * 2  # 15 % of 12 -> 2
    trained.save(tmp_path / "adp")
    loaded = TrainedADP.load(tmp_path / "adp")
    h, t = torch.randn(3, 16, 8, 8), torch.tensor(250)
    assert torch.allclose(trained.model(h, t)["skin"], loaded.model(h, t)["skin"])
    assert loaded.space == SPACE
    # the class means of its trajectories travel with it (guidance.shift)
    cells = tuple(len(c) for _, c in SPACE.attributes)
    assert loaded.means.means.shape == (*cells, *traj.h.shape[1:])
    assert int(loaded.means.counts.sum()) == len(traj.h)
    assert torch.equal(loaded.means.timesteps, traj.timesteps)


def test_the_adp_learns_a_label_that_h_carries():
    """Labels that are a function of h (the sign of channel 0's mean): the held-out accuracy
    the ADP reports must be high; with labels independent of h it must stay near chance."""
    from fairsynth.guidance.trajectories import Trajectories

    gen = torch.Generator().manual_seed(0)
    h = torch.randn(160, 2, 16, 8, 8, generator=gen)
    sign = (h[:, :, 0].mean(dim=(1, 2, 3)) > 0).long()
    h[:, :, 0] += torch.where(sign > 0, 1.0, -1.0)[:, None, None, None]  # a clear signal
    labels = {"skin": sign.numpy(), "hair": np.zeros(160, int)}
    traj = Trajectories(
        h.half(), torch.tensor([750, 250]), labels, np.zeros((160, 4, 4, 3), np.uint8)
    )
    trained = train_adp(
        traj, SPACE, ADPTraining(epochs=6, batch_size=32, width=8, hidden=32, dropout=0.0)
    )
    accuracy = [b["skin"] for b in trained.meta["heldout_accuracy_by_band"]]
    assert min(accuracy) >= 0.9, accuracy
    noise = {"skin": np.random.default_rng(1).integers(0, 2, 160), "hair": labels["hair"]}
    training = ADPTraining(epochs=6, batch_size=32, width=8, hidden=32, dropout=0.0)
    blind = train_adp(Trajectories(h.half(), traj.timesteps, noise, traj.images), SPACE, training)
    assert max(b["skin"] for b in blind.meta["heldout_accuracy_by_band"]) <= 0.75


def test_trust_region_caps_each_sample_step():
    adp = _adp()
    h = torch.randn(8, 16, 8, 8)
    capped = DistributionGuidance(
        adp,
        ("skin",),
        np.array([0.0, 1.0]),
        GuidanceConfig(strength=1e6, max_step=0.05, loss="chi2", shift=0.0),
    )
    free = DistributionGuidance(
        adp,
        ("skin",),
        np.array([0.0, 1.0]),
        GuidanceConfig(strength=1e6, max_step=0.0, loss="chi2", shift=0.0),
    )
    for g in (capped, free):
        g.begin_step(500, 0, 10)
    step_c = (capped.edit(h) - h).flatten(1).norm(dim=1)
    step_f = (free.edit(h) - h).flatten(1).norm(dim=1)
    limit = 0.05 * h.flatten(1).norm(dim=1)
    assert (step_c <= limit * 1.0001).all()
    assert (step_f > limit).all()


def test_calibration_sweep_picks_a_strength(tiny_model):
    from fairsynth.app.calibrate import Sweep, calibrate_strength, choose_strength
    from fairsynth.guidance.guided import GuidedSampler
    from fairsynth.toyfaces import VERIFIER_DIR
    from fairsynth.verify.classifier import AttributeClassifier

    adp = _adp()
    sweep = Sweep(GuidanceConfig(loss="chi2", shift=0.0), (1.0, 10.0),
                  settings=SamplerSettings(steps=2, eta=1.0), n=3, batch_size=3)  # fmt: skip
    sampler = GuidedSampler(tiny_model, sweep.settings, sweep.guidance, adp)
    result = calibrate_strength(sampler, AttributeClassifier.load(VERIFIER_DIR), sweep)
    assert [r["strength"] for r in result["rows"]] == [0.0, 1.0, 10.0]
    assert result["chosen"] == choose_strength(result["rows"], 0.03)


def test_the_strength_rule_takes_the_lowest_fd_that_keeps_quality():
    from fairsynth.app.calibrate import choose_strength

    rows = [
        {"strength": 0.0, "fd_hard": 0.40, "confident_fraction": 1.00},
        {"strength": 10.0, "fd_hard": 0.30, "confident_fraction": 0.99},
        {"strength": 100.0, "fd_hard": 0.10, "confident_fraction": 0.98},
        {"strength": 1000.0, "fd_hard": 0.01, "confident_fraction": 0.80},  # quality lost
    ]
    assert choose_strength(rows, 0.03) == 100.0
    assert choose_strength(rows, 0.25) == 1000.0
    ruined = [rows[0], *({**r, "confident_fraction": 0.5} for r in rows[1:])]
    assert choose_strength(ruined, 0.03) == 10.0  # none keeps quality: the gentlest


def test_residual_guidance_targets_what_earlier_batches_lack(tiny_model, monkeypatch):
    import fairsynth.guidance.guided as ev
    from fairsynth.core.attributes import Target
    from fairsynth.core.quotas import residual_target

    seen = []
    real = ev.GuidedSampler._sample

    def spy(self, seed, batch, size, target):
        images, guidance = real(self, seed, batch, size, target)
        seen.append((target.probs.copy(), guidance.last_probs.argmax(1).numpy()))
        return images, guidance

    monkeypatch.setattr(ev.GuidedSampler, "_sample", spy)
    target = Target.from_marginals(SPACE, {"skin": [0.3, 0.7]})
    config = GuidanceConfig(
        mode="distribution", strength=1.0, residual=True, loss="chi2", shift=0.0
    )
    sampler = ev.GuidedSampler(tiny_model, SamplerSettings(steps=2), config, _adp())
    images, _ = sampler.batches(8, 0, 3, target)
    assert len(images) == 8 and [len(c) for _, c in seen] == [3, 3, 2]
    assert np.allclose(seen[0][0], target.probs)
    first = np.bincount(seen[0][1], minlength=2)
    both = first + np.bincount(seen[1][1], minlength=2)
    assert np.allclose(seen[1][0], residual_target(target.probs, first, 6))
    assert np.allclose(seen[2][0], residual_target(target.probs, both, 8))


def test_streamed_trajectories_train_the_same_adp_as_in_memory(tmp_path, tiny_model):
    """A store on disk holds what the in-memory recording holds, and the ADP trained from it
    (rows read through the DataLoader) has the same weights."""
    from fairsynth.guidance.trajectories import Trajectories, stream_trajectories
    from fairsynth.guidance.trajectory_store import TrajectoryWriter, is_store

    def labeller(images):
        bright = images.mean(axis=(1, 2, 3)) > 120
        return {
            "skin": np.eye(2)[bright.astype(int)],
            "hair": np.eye(3)[np.zeros(len(images), int)],
        }

    kw = dict(n=10, seed=0, recording=Recording(SamplerSettings(steps=4), 2, 4))
    memory = record_trajectories(tiny_model, labeller, **kw)
    writer = TrajectoryWriter(tmp_path / "store")
    assert not is_store(tmp_path / "store")  # unfinished until finish()
    stream_trajectories(writer, tiny_model, labeller, **kw)
    writer.finish()
    disk = Trajectories.open(tmp_path / "store")
    assert disk.h.shape == memory.h.shape and len(disk.h) == 10
    assert torch.equal(disk.h.to_tensor(), memory.h)
    assert torch.equal(disk.h[np.array([9, 0]), np.array([1, 0])], memory.h[[9, 0], [1, 0]])
    assert (np.asarray(disk.images) == memory.images).all()
    assert all((disk.labels[k] == memory.labels[k]).all() for k in memory.labels)
    assert torch.equal(disk.timesteps, memory.timesteps)
    train = dict(epochs=2, batch_size=8, width=8, hidden=16, dropout=0.1)
    a, b = (
        train_adp(memory, SPACE, ADPTraining(**train)),
        train_adp(disk, SPACE, ADPTraining(**train)),
    )
    for (name, x), y in zip(
        a.model.state_dict().items(), b.model.state_dict().values(), strict=True
    ):
        assert torch.equal(x, y), name
    w = TrajectoryWriter(tmp_path / "mixed")
    w.append(torch.zeros(1, 2, 16, 8, 8), [750, 250], np.zeros((1, 32, 32, 3), np.uint8), {})
    with pytest.raises(ValueError, match="different timesteps"):
        w.append(torch.zeros(1, 2, 16, 8, 8), [700, 250], np.zeros((1, 32, 32, 3), np.uint8), {})


@pytest.mark.parametrize(("loss", "strength"), [("chi2", 20.0), ("ot", 200.0)])
def test_protect_leaves_the_attributes_the_target_does_not_name(loss, strength):
    adp = _adp()
    h = torch.randn(16, 16, 8, 8)
    t = torch.tensor(400)

    def edited(protect: bool) -> torch.Tensor:
        # a step of 1-2 % of |h|: small enough for the first order to rule
        config = GuidanceConfig(
            strength=strength, loss=loss, max_step=0, protect=protect, shift=0.0
        )
        g = DistributionGuidance(adp, ("skin",), np.array([0.1, 0.9]), config)
        g.begin_step(400, 0, 10)
        return g.edit(h)

    def moved(h2: torch.Tensor, head: str) -> float:
        before, after = adp.model(h, t)[head], adp.model(h2, t)[head]
        gaps = lambda z: z[:, 1:] - z[:, :1]  # noqa: E731 (softmax ignores a common shift)
        return float((gaps(after) - gaps(before)).abs().mean())

    free, kept = edited(False), edited(True)
    assert moved(free, "hair") > 1e-4
    assert moved(kept, "hair") < 0.05 * moved(free, "hair")  # only second-order changes remain
    assert moved(kept, "skin") > 0.5 * moved(free, "skin")  # the target still moves
