import numpy as np
import pytest

from fairsynth.toyfaces.render import ATTRIBUTES, render, render_batch, sample_params


def test_shape_dtype_and_determinism():
    a, la = render_batch(16, seed=3)
    b, lb = render_batch(16, seed=3)
    assert a.shape == (16, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    for k in ATTRIBUTES:
        assert np.array_equal(la[k], lb[k])
    c, _ = render_batch(16, seed=4)
    assert not np.array_equal(a, c)


def _pair(attribute: str, values: tuple[int, int]):
    """Two renders identical in everything but one attribute."""
    rng = np.random.default_rng(0)
    base = sample_params(64, rng)
    labels = base.labels()
    out = []
    for v in values:
        lab = dict(labels)
        lab[attribute] = np.full(64, v)
        p = sample_params(64, np.random.default_rng(0), labels=lab)
        out.append(render(p).astype(np.float32))
    return out


@pytest.mark.parametrize(
    "attribute,values,min_pixels",
    [("skin", (0, 1), 100), ("eyeglasses", (0, 1), 40), ("hair", (0, 2), 80)],
)
def test_each_attribute_changes_many_pixels(attribute, values, min_pixels):
    a, b = _pair(attribute, values)
    changed = (np.abs(a - b).max(axis=-1) > 40).sum(axis=(1, 2))
    assert changed.min() >= min_pixels, changed.min()


def test_nuisance_variation_present():
    rng = np.random.default_rng(1)
    labels = {"skin": np.zeros(32, int), "eyeglasses": np.zeros(32, int), "hair": np.zeros(32, int)}
    imgs = render(sample_params(32, rng, labels=labels)).astype(np.float32)
    # same attributes, different position/size/background/expression
    assert np.abs(imgs[0] - imgs[1:]).mean() > 10


def test_probs_validated():
    with pytest.raises(ValueError, match="skin"):
        sample_params(4, np.random.default_rng(0), {"skin": [0.5, 0.6]})
    with pytest.raises(ValueError, match="hair"):
        sample_params(4, np.random.default_rng(0), {"hair": [0.5, 0.5]})


def test_bias_is_followed():
    _, labels = render_batch(20000, seed=0, probs={"skin": [0.8, 0.2]})
    assert abs(labels["skin"].mean() - 0.2) < 0.015
