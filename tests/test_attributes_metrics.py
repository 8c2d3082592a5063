import numpy as np
import pytest

from fairsynth.attributes import AttributeSpace, Target, joint_from_per_attribute
from fairsynth.metrics import (
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
    rng = np.random.default_rng(0)
    per = {k: rng.dirichlet(np.ones(len(c)), 500) for k, c in SPACE.attributes}
    t = Target.uniform(SPACE, ["skin", "eyeglasses"])
    r = evaluate_against_target(per, t)
    assert sum(r["counts"]) == 500 and len(r["hard"]) == 4
    joint = joint_from_per_attribute(per, t.space)
    assert np.allclose(joint.sum(1), 1)
    assert r["fd_soft"] == pytest.approx(fairness_discrepancy(joint.mean(0), t.probs), abs=1e-5)


def test_frechet_distance_zero_for_same_and_grows():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2000, 4))
    assert frechet_distance(a, a) == pytest.approx(0, abs=1e-6)
    assert frechet_distance(a, a + 1.0) == pytest.approx(4.0, rel=0.05)
