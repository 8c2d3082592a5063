import numpy as np
import pytest

from fairsynth.core.attributes import AttributeSpace, Target, joint_from_per_attribute
from fairsynth.core.metrics import (
    evaluate_against_target,
    fairness_discrepancy,
    frechet_distance,
    hard_distribution,
    kl_divergence,
    total_variation,
)

SPACE = AttributeSpace.from_dict(
    {"skin": ["light", "dark"], "eyeglasses": ["no", "yes"], "hair": ["black", "brown", "blond"]}
)


def test_cells_and_indices():
    sub = SPACE.subspace(["skin", "eyeglasses"])
    assert sub.cell_names() == ["light|no", "light|yes", "dark|no", "dark|yes"]
    idx = sub.cell_index({"skin": np.array([1, 0]), "eyeglasses": np.array([1, 1])})
    assert idx.tolist() == [3, 1]
    back = sub.cell_labels(idx)
    assert back["skin"].tolist() == [1, 0]


def test_marginal_target_is_product():
    t = Target.from_marginals(
        SPACE, {"skin": {"light": 0.3, "dark": 0.7}, "eyeglasses": [0.5, 0.5]}
    )
    assert np.allclose(t.probs, [0.15, 0.15, 0.35, 0.35])
    assert np.allclose(t.marginal("skin"), [0.3, 0.7])


@pytest.mark.parametrize(
    "marg,msg",
    [
        ({"skin": {"light": 0.5, "purple": 0.5}}, "unknown class"),
        ({"skin": [0.7, 0.7]}, "sum to 1"),
        ({"skin": [1.5, -0.5]}, ">= 0"),
        ({"age": [0.5, 0.5]}, "unknown attribute"),
    ],
)
def test_bad_targets(marg, msg):
    with pytest.raises((ValueError, KeyError), match=msg):
        Target.from_marginals(SPACE, marg)


def test_joint_cell_target():
    t = Target.from_cells(SPACE, ["skin", "eyeglasses"], {"dark|yes": 0.5, "light|no": 0.5})
    assert t.probs.tolist() == [0.5, 0, 0, 0.5]
    with pytest.raises(ValueError, match="not one of"):
        Target.from_cells(SPACE, ["skin"], {"green": 1.0})


def test_fd_with_missing_classes_counting_zero():
    probs = {"hair": np.array([[0.9, 0.05, 0.05]] * 4)}  # never predicts brown or blond
    space = SPACE.subspace(["hair"])
    hard = hard_distribution(probs, space)
    assert hard.tolist() == [1.0, 0.0, 0.0]
    target = np.full(3, 1 / 3)
    assert fairness_discrepancy(hard, target) == pytest.approx(np.sqrt((2 / 3) ** 2 + 2 / 9))
    assert kl_divergence(target, hard) == float("inf")
    assert total_variation(hard, target) == pytest.approx(2 / 3)


def test_evaluate_against_target_soft_and_hard():
    # four samples over skin x eyeglasses, by hand: cells light|no, light|yes, dark|no, dark|yes
    per = {
        "skin": np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]),
        "eyeglasses": np.array([[0.7, 0.3], [0.4, 0.6], [0.5, 0.5], [1.0, 0.0]]),
        "hair": np.full((4, 3), 1 / 3),
    }
    t = Target.uniform(SPACE, ["skin", "eyeglasses"])
    r = evaluate_against_target(per, t)
    # argmax classes: (light, no), (light, yes), (dark, no: a tie goes to the first), (light, no)
    assert r["counts"] == [2, 1, 1, 0]
    assert r["hard"] == [0.5, 0.25, 0.25, 0.0]
    assert r["fd_hard"] == pytest.approx(np.sqrt(0.25**2 + 0 + 0 + 0.25**2))
    # soft: the mean over samples of the product of the two attributes' probabilities
    soft = np.array([0.63 + 0.32 + 0.15 + 0.6, 0.27 + 0.48 + 0.15 + 0.0,
                     0.07 + 0.08 + 0.35 + 0.4, 0.03 + 0.12 + 0.35 + 0.0]) / 4  # fmt: skip
    assert np.allclose(r["soft"], soft.round(6))
    assert r["fd_soft"] == pytest.approx(np.sqrt(((soft - 0.25) ** 2).sum()), abs=1e-6)
    joint = joint_from_per_attribute(per, t.space)
    assert np.allclose(joint[0], [0.63, 0.27, 0.07, 0.03])


def test_frechet_distance_zero_for_same_and_grows():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=0.05)
