import numpy as np
import pytest

from fairsynth.core.quotas import augment_quotas, remaining_target, standalone_quotas


def test_standalone_sums_exactly():
    q = standalone_quotas(np.array([1 / 3, 1 / 3, 1 / 3]), 100)
    assert q.sum() == 100 and sorted(q.tolist()) == [33, 33, 34]
    assert standalone_quotas(np.array([0.7, 0.3]), 10).tolist() == [7, 3]


def test_augment_fewest_samples():
    # reference 80 light / 20 dark, target 50/50 -> add 60 dark only
    assert augment_quotas(np.array([0.5, 0.5]), np.array([80, 20])).tolist() == [0, 60]
    # target 30/70 -> total T with 0.3 T >= 80 -> T = 267 (largest remainder 80/187)
    q = augment_quotas(np.array([0.3, 0.7]), np.array([80, 20]))
    final = q + np.array([80, 20])
    assert (q >= 0).all() and final[0] == 80
    assert abs(final[0] / final.sum() - 0.3) < 0.005


@pytest.mark.parametrize("seed", range(20))
def test_augment_random_is_minimal_and_on_target(seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(4))
    r = rng.integers(0, 500, 4)
    q = augment_quotas(p, r)
    final = q + r
    assert (q >= 0).all()
    assert np.abs(final / final.sum() - p).max() <= 1.0 / final.sum() + 1e-12
    # one sample fewer in total cannot keep every cell at or above its reference count
    assert final.sum() - 1 < max(r[c] / p[c] for c in range(4)) or q.sum() == 0


def test_augment_zero_target_cell_with_reference_refused():
    with pytest.raises(ValueError, match="cannot reach"):
        augment_quotas(np.array([1.0, 0.0]), np.array([3, 4]))


def test_remaining_target():
    assert remaining_target(np.array([5, 5]), np.array([5, 2])).tolist() == [0.0, 1.0]
    assert remaining_target(np.array([5, 5]), np.array([5, 6])) is None


def test_last_batches_shrink_to_what_is_missing():
    from fairsynth.run.judge import GenerationState, next_batch_size

    state = GenerationState(quotas=np.array([100, 100]), accepted=np.array([0, 0]))
    assert next_batch_size(state, 64) == 64
    state.accepted[:] = [100, 90]  # 10 missing -> 15
    assert next_batch_size(state, 64) == 15
    state.accepted[:] = [100, 99]  # 1 missing -> never below min_batch
    assert next_batch_size(state, 64, min_batch=8) == 8
    assert next_batch_size(state, 64, min_batch=64) == 64  # fixed-size batches
    state.accepted[:] = [130, 0]  # over-full cells do not hide what others miss
    assert next_batch_size(state, 64) == 64


def test_residual_target():
    from fairsynth.core.quotas import residual_target

    assert np.allclose(residual_target([0.3, 0.7], [3, 0], 6), [0.0, 1.0])  # dark lacks
    assert np.allclose(
        residual_target([0.3, 0.7], [1, 3], 6), [0.3 * 6 - 1, 0.7 * 6 - 3] / np.float64(2.0)
    )
    assert np.allclose(residual_target([0.5, 0.5], [4, 4], 8), [0.5, 0.5])  # nothing lacking
