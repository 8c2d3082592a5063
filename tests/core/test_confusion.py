import numpy as np

from fairsynth.core.confusion import (
    Bootstrap,
    audit_matrices,
    cell_confusion,
    estimate_truth,
    unmix,
    verified_target,
)


def _noisy_verifier(rng, true_labels, recall):
    """Verified labels: right with the class's recall, else the other class (binary)."""
    right = rng.random(len(true_labels)) < np.asarray(recall)[true_labels]
    return np.where(right, true_labels, 1 - true_labels)


def _counts(true_labels, verified, k=2):
    m = np.zeros((k, k), dtype=int)
    np.add.at(m, (true_labels, verified), 1)
    return m


def test_the_joint_confusion_is_the_product_of_the_attributes():
    a = np.array([[8, 2], [1, 9]])
    b = np.array([[3, 1], [0, 4]])
    joint = cell_confusion([a, b])
    assert joint.shape == (4, 4)
    assert np.allclose(joint.sum(1), 1)
    assert joint[1, 2] == 0  # light|yes -> dark|no needs yes judged no: never in b
    assert np.isclose(joint[0, 3], 0.2 * 0.25)  # light|no -> dark|yes


def test_unmixing_inverts_the_verified_target():
    m = cell_confusion([np.array([[45, 55], [5, 95]])])  # female recall 0.45, as deepface's
    truth = np.array([0.5, 0.5])
    verified = verified_target(truth, m)
    assert verified[0] < 0.3  # the verifier counts far fewer women than there are
    assert np.allclose(unmix(verified, m), truth, atol=1e-6)


def test_the_interval_covers_the_truth_behind_an_imperfect_verifier():
    rng = np.random.default_rng(0)
    recall = [0.6, 0.95]
    audit_true = rng.integers(0, 2, 400)  # the labelled reference the audit stage judges
    audit = _counts(audit_true, _noisy_verifier(rng, audit_true, recall))
    covered = 0
    for trial in range(20):
        truth = rng.choice(2, size=1000, p=[0.5, 0.5])
        verified = _noisy_verifier(rng, truth, recall)
        counts = np.bincount(verified, minlength=2)
        est = estimate_truth(
            counts, [audit], np.array([0.5, 0.5]), None, Bootstrap(200, seed=trial)
        )
        true_frac = np.bincount(truth, minlength=2) / len(truth)
        covered += bool(est["low"][0] <= true_frac[0] <= est["high"][0])
        assert abs(counts[0] / 1000 - 0.5) > 0.1  # the raw count is far off the truth
    assert covered >= 17  # a 95 % interval, 20 trials


def test_the_interval_covers_the_truth_of_a_set_picked_by_verified_cell():
    # quotas select by the verifier's call: P(verified | true) of the set is not the audit's
    rng = np.random.default_rng(1)
    recall = [0.6, 0.95]
    audit_true = rng.integers(0, 2, 1000)
    audit = _counts(audit_true, _noisy_verifier(rng, audit_true, recall))
    covered = 0
    for trial in range(20):
        truth = rng.choice(2, size=3000, p=[0.5, 0.5])
        called = _noisy_verifier(rng, truth, recall)
        left, taken = np.array([300, 300]), []
        for i, c in enumerate(called):
            if left[c] > 0:
                left[c] -= 1
                taken.append(i)
        taken = np.array(taken)
        generated = np.bincount(called[: taken[-1] + 1], minlength=2)
        est = estimate_truth(np.bincount(called[taken], minlength=2), [audit],
                             generated=generated, bootstrap=Bootstrap(200, seed=trial))  # fmt: skip
        true_light = float((truth[taken] == 0).mean())
        assert abs(true_light - 0.5) > 0.05  # 300/300 as called is not 50/50 truly
        covered += bool(est["low"][0] <= true_light <= est["high"][0])
    assert covered >= 17


def test_audit_matrices_need_every_attribute():
    entry = {"verifier": "x", "skin": {"matrix": [[1, 0], [0, 1]]}}
    assert audit_matrices(entry, ["skin"])[0].shape == (2, 2)
    assert audit_matrices(entry, ["skin", "hair"]) is None


def test_corrected_quotas_follow_the_verifier_confusion():
    import pytest

    from fairsynth.app.config import parse_params, replace
    from fairsynth.app.runspec import job_quotas

    params = parse_params(
        {"target": {"marginals": {"skin": {"light": 0.5, "dark": 0.5}}},
         "generate": {"n": 512}, "verify": {"correct_quotas": True}}
    )  # fmt: skip
    target = params.build_target()
    audit = {"verifiers": {"first": {"skin": {"matrix": [[45, 55], [5, 95]]}}}}
    # half light, half dark truly: the verifier calls 0.5*0.45 + 0.5*0.05 = 25 % of them light
    assert job_quotas(params, target, audit).tolist() == [128, 384]
    with pytest.raises(ValueError, match="verify.correct_quotas needs the audit"):
        job_quotas(params, target, {"verifiers": {}})
    plain = replace(params, verify=replace(params.verify, correct_quotas=False))
    assert job_quotas(plain, target, audit).tolist() == [256, 256]


def test_guidance_aims_at_the_truth_behind_verified_quotas():
    from fairsynth.run.windows import WindowPolicy, plan_window

    confusion = cell_confusion([np.array([[95, 5], [35, 65]])])
    quotas = [
        np.array([650, 350])
    ]  # verified cells whose truth is 50/50: 0.5 (.95, .05) + 0.5 (.35, .65)
    policy = WindowPolicy(size=1, batch_size=64, min_batch=8, budget=10_000, seed=0)
    (plain,) = plan_window(quotas, [np.zeros(2, int)], 0, 0, policy)
    (corrected,) = plan_window(quotas, [np.zeros(2, int)], 0, 0, policy, [confusion])
    assert np.allclose(plain.target, quotas[0] / quotas[0].sum())
    assert np.allclose(corrected.target, [0.5, 0.5], atol=0.01)


def test_an_audit_without_errors_still_leaves_an_interval():
    """0 errors in 30 labelled 'yes' samples does not prove the verifier never errs: the
    interval must widen around the point estimate, not collapse onto it."""
    audit = [np.array([[226, 0], [0, 30]])]
    est = estimate_truth(np.array([100, 100]), audit, np.array([0.5, 0.5]), None, Bootstrap(300))
    assert est["probs"] == [0.5, 0.5]
    assert est["low"][0] < 0.5 < est["high"][1] and est["high"][0] - est["low"][0] > 0.01
    assert est["fd_interval"][1] > 0
