import os
import signal
from pathlib import Path

import numpy as np
import pytest

from fairsynth.app.config import ConfigError, parse_params
from fairsynth.app.resolve import verifier_spec
from fairsynth.verify import NO_FACE, ClassifierVerifier, Verdict, load_verifier
from fairsynth.verify.deepface import (
    RACE_LABELS,
    DeepfaceVerifier,
    MissingWeights,
    attribute_maps,
    required_files,
)
from fairsynth.verify.worker import WorkerClient, WorkerError

ROOT = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": str(ROOT)}


def test_protocol_round_trip_and_errors():
    client = WorkerClient("tests.workers.echo_worker", {}, env=ENV)
    try:
        a = np.arange(12, dtype=np.float32).reshape(3, 4)
        reply, out = client.call({}, a)
        assert reply["n"] == 3 and np.array_equal(out, a * 2) and out.dtype == a.dtype
        with pytest.raises(WorkerError, match="asked to fail"):
            client.call({"fail": True}, a)
        assert client.call({}, a)[0]["pid"] == reply["pid"], "an error answer is not a crash"
    finally:
        client.close()


def test_a_crashed_worker_is_restarted_and_the_batch_retried(tmp_path):
    client = WorkerClient(
        "tests.workers.echo_worker", {"crash_marker": str(tmp_path / "crashed")}, env=ENV
    )
    try:
        a = np.ones((2, 2))
        with pytest.warns(UserWarning, match="worker died"):
            reply, out = client.call({}, a)  # first worker dies mid-call; the retry answers
        assert np.array_equal(out, a * 2) and len(client.crashes) == 1
        os.kill(reply["pid"], signal.SIGKILL)  # killed from outside between batches
        client.proc.wait(timeout=10)
        with pytest.warns(UserWarning, match="worker died"):
            reply2, _ = client.call({}, a)
        assert reply2["pid"] != reply["pid"] and len(client.crashes) == 2
    finally:
        client.close()


def test_deepface_maps_merge_and_bin():
    maps = attribute_maps(
        {
            "gender": {"source": "gender", "classes": {"male": ["Man"], "female": ["Woman"]}},
            "race": {"source": "race", "classes": {
                "white": ["white"], "black": ["black"],
                "other": ["asian", "indian", "middle eastern", "latino hispanic"]}},
            "age": {"source": "age", "classes": {"young": [0, 30], "old": [30, 101]}},
        }
    )  # fmt: skip
    assert maps["gender"].apply(np.array([[0.2, 0.8]])).tolist() == [[0.8, 0.2]]
    race = np.array([[0.1, 0.1, 0.2, 0.3, 0.2, 0.1]])
    np.testing.assert_allclose(maps["race"].apply(race), [[0.3, 0.2, 0.5]])
    age = np.zeros((1, 101))
    age[0, 25], age[0, 60] = 0.25, 0.75
    np.testing.assert_allclose(maps["age"].apply(age), [[0.25, 0.75]])


@pytest.mark.parametrize(
    "attributes, message",
    [
        ({"race": {"source": "race", "classes": {"white": ["white"], "black": ["black"]}}},
         "exactly one class"),
        ({"race": {"source": "race", "classes": {"a": ["white", "martian"], "b": ["black"]}}},
         "martian"),
        ({"age": {"source": "age", "classes": {"y": [0, 30], "o": [40, 101]}}}, "tile"),
        ({"gender": {"source": "sex", "classes": {"f": ["Woman"], "m": ["Man"]}}}, "source"),
    ],
)  # fmt: skip
def test_bad_deepface_tables_name_the_key(attributes, message):
    raw = {"verify": {"verifier": "deepface", "deepface": {"attributes": attributes}}}
    with pytest.raises(ConfigError, match=message) as err:
        parse_params(raw)
    assert "verify.deepface.attributes" in str(err.value)


def test_deepface_classes_must_match_the_attributes():
    raw = {
        "attributes": {"gender": ["male", "female"]},
        "verify": {"verifier": "deepface"},  # default table: female, male
    }
    with pytest.raises(ConfigError, match=r"verify.deepface.attributes.gender.classes"):
        parse_params(raw)


def test_missing_weights_stop_before_any_work(tmp_path):
    params = parse_params(
        {"attributes": {"gender": ["female", "male"]},
         "verify": {"verifier": "deepface", "deepface": {"home": str(tmp_path),
                    "attributes": {"gender": {"source": "gender", "classes": {
                        "female": ["Woman"], "male": ["Man"]}}}}}}
    )  # fmt: skip
    rows = required_files(params.verify.deepface)
    assert [r["file"] for r in rows] == ["gender_model_weights.pth"]
    assert rows[0]["path"] == str(tmp_path / ".deepface" / "weights" / "gender_model_weights.pth")
    assert not rows[0]["present"]
    with pytest.raises(MissingWeights, match="gender_model_weights.pth") as err:
        load_verifier(verifier_spec(params))
    assert str(tmp_path) in str(err.value) and "allow_download" in str(err.value)


def test_classifier_verifier_has_no_rejections():
    from fairsynth.toyfaces import VERIFIER_DIR
    from fairsynth.verify.classifier import AttributeClassifier

    v = ClassifierVerifier(AttributeClassifier.load(VERIFIER_DIR))
    verdict = v.verify(np.zeros((3, 32, 32, 3), np.uint8))
    assert verdict.rejects == [None] * 3 and set(verdict.probs) == set(v.attributes)
    with pytest.raises(ValueError, match="one rejection entry per sample"):
        Verdict({"a": np.ones((2, 2))}, [None])


def _random_deepface_weights(home: Path, sources=("gender", "race")) -> None:
    """deepface's own models with random weights, saved where deepface looks for them."""
    import torch
    from deepface.models.demography.pytorch import Gender, Race

    weights = home / ".deepface" / "weights"
    weights.mkdir(parents=True)
    torch.manual_seed(0)
    builders = {"gender": (Gender, "gender_model_weights.pth"),
                "race": (Race, "race_model_single_batch.pth")}  # fmt: skip
    for s in sources:
        module, name = builders[s]
        torch.save(module.base_model().state_dict(), weights / name)


@pytest.mark.slow
def test_deepface_verifier_matches_deepface_analyze(tmp_path, monkeypatch):
    """The real deepface code path on deepface's own (random-weight) models: our batched
    worker gives what ``DeepFace.analyze`` gives, image by image."""
    _random_deepface_weights(tmp_path)
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    monkeypatch.setenv("DEEPFACE_BACKEND_ENGINE", "pytorch")
    params = parse_params(
        {"attributes": {"gender": ["female", "male"], "race": [r.replace(" ", "_") for r in RACE_LABELS]},
         "verify": {"verifier": "deepface", "deepface": {"home": str(tmp_path), "batch_size": 2}}}
    )  # fmt: skip
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 48, 40, 3), dtype=np.uint8)
    verifier = load_verifier(verifier_spec(params))
    assert isinstance(verifier, DeepfaceVerifier)
    try:
        verdict = verifier.verify(images)
        from deepface import DeepFace

        for i, img in enumerate(images):
            (ref,) = DeepFace.analyze(
                img[:, :, ::-1].copy(), actions=["gender", "race"], detector_backend="skip",
                enforce_detection=False, silent=True,
            )  # fmt: skip
            np.testing.assert_allclose(
                verdict.probs["gender"][i] * 100, [ref["gender"]["Woman"], ref["gender"]["Man"]],
                rtol=1e-4, atol=1e-4,
            )  # fmt: skip
            np.testing.assert_allclose(
                verdict.probs["race"][i] * 100, [ref["race"][r] for r in RACE_LABELS],
                rtol=1e-4, atol=1e-4,
            )  # fmt: skip
        assert verdict.rejects == [None] * 3
        # a worker killed between batches is replaced, and the answer does not change
        os.kill(verifier.client.pid, signal.SIGKILL)
        verifier.client.proc.wait(timeout=10)
        with pytest.warns(UserWarning, match="worker died"):
            again = verifier.verify(images)
        np.testing.assert_allclose(again.probs["race"], verdict.probs["race"], rtol=1e-5)
    finally:
        verifier.close()


@pytest.mark.slow
def test_deepface_opencv_detector_rejects_images_without_a_face(tmp_path):
    weights = tmp_path / ".deepface" / "weights"
    _random_deepface_weights(tmp_path, sources=("gender",))
    params = parse_params(
        {"attributes": {"gender": ["female", "male"]},
         "verify": {"verifier": "deepface", "deepface": {
             "home": str(tmp_path), "detector": "opencv",
             "attributes": {"gender": {"source": "gender", "classes": {"female": ["Woman"], "male": ["Man"]}}}}}}
    )  # fmt: skip
    verifier = load_verifier(verifier_spec(params))
    assert (weights / "haarcascade_frontalface_default.xml").is_file()
    try:
        verdict = verifier.verify(np.full((2, 64, 64, 3), 127, np.uint8))  # flat grey: no face
        assert verdict.rejects == [NO_FACE, NO_FACE]
    finally:
        verifier.close()


def _toy_verifier():
    from fairsynth.toyfaces import VERIFIER_DIR
    from fairsynth.verify.classifier import AttributeClassifier

    return ClassifierVerifier(AttributeClassifier.load(VERIFIER_DIR))


def test_bad_images_are_rejected_per_sample_not_a_crash():
    from fairsynth.toyfaces.render import render, sample_params
    from fairsynth.verify import BAD_IMAGE

    faces = render(sample_params(2, np.random.default_rng(0)))
    gray = faces[1].mean(-1).astype(np.uint8)  # (32, 32): grayscale is expanded, still judged
    batch = [faces[0], gray, np.zeros((64, 64, 3), np.uint8), faces[0].astype(np.float32),
             "not an image", np.zeros((4, 4, 3), np.uint8)]  # fmt: skip
    verdict = _toy_verifier().verify(batch)
    assert verdict.rejects == [None, None, BAD_IMAGE, BAD_IMAGE, BAD_IMAGE, BAD_IMAGE]
    assert np.allclose(verdict.probs["skin"][2], 0.5), "a rejected image gets no guess"


def test_verifier_pair_rejects_disagreement_and_keeps_both():
    from fairsynth.toyfaces.render import render, sample_params
    from fairsynth.verify import DISAGREE, VerifierPair

    first = _toy_verifier()

    class Contrarian:
        attributes = {"skin": ("light", "dark")}

        def verify(self, images):
            p = first.verify(images).probs["skin"][:, ::-1]  # always the other skin class
            return Verdict({"skin": p})

        def close(self):
            pass

    faces = render(sample_params(3, np.random.default_rng(1)))
    agree = VerifierPair(first, _toy_verifier()).verify(faces)
    assert agree.rejects == [None] * 3 and set(agree.second) == {"skin", "eyeglasses", "hair"}
    verdict = VerifierPair(first, Contrarian()).verify(faces)
    assert verdict.rejects == [DISAGREE] * 3
    assert np.allclose(verdict.second["skin"], verdict.probs["skin"][:, ::-1])
    with pytest.raises(ValueError, match="classes of 'skin' differ"):
        Contrarian.attributes = {"skin": ("dark", "light")}
        VerifierPair(first, Contrarian())


def test_second_verifier_in_the_pipeline_and_the_audit(tmp_path, tiny_world):
    import pandas as pd

    from fairsynth.app.config import load_params
    from fairsynth.app.stages.audit import stage_audit
    from fairsynth.app.stages.generate import stage_generate
    from fairsynth.app.stages.reference import stage_reference
    from fairsynth.app.stages.report import stage_report
    from fairsynth.toyfaces import PSEUDO_LABELLER_DIR

    p = tmp_path / "params.yaml"
    p.write_text(
        f"reference: {{path: {tmp_path / 'ref'}, n: 40, seed: 1}}\n"
        "model: {path: toyfaces, steps: 20}\n"  # real faces: the two verifiers mostly agree
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        "target: {marginals: {skin: {light: 0.5, dark: 0.5}, eyeglasses: {no: 0.5, yes: 0.5},\n"
        "                     hair: {black: 0.4, brown: 0.3, blond: 0.3}}}\n"  # all three judged
        "guidance: {mode: none, batch_size: 4}\n"
        f"verify: {{confidence: 0.0, second: {PSEUDO_LABELLER_DIR}, audit_n: 30}}\n"
        "generate: {n: 12, budget: 12, seed: 3}\n"
        f"output: {{dir: {tmp_path / 'out'}}}\n"
    )
    params = load_params(p)
    stage_reference(params)
    audit = stage_audit(params, tmp_path / "audit")
    for role in ("first", "second"):
        skin = audit["verifiers"][role]["skin"]
        assert np.sum(skin["matrix"]) == 30 - skin["rejected"]
        assert skin["accuracy"] > 0.9, "both toy classifiers read clean renders right"
    stage_generate(params, audit, progress=False)
    frame = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert {"p2_skin", "verifiers_agree"} <= set(frame.columns)
    # agreement recomputed from the two verdicts' probabilities (every attribute both judge)
    agree = np.ones(len(frame), bool)
    for k in ("skin", "eyeglasses", "hair"):
        first = np.stack(frame[f"p_{k}"].to_numpy()).argmax(1)
        agree &= first == np.stack(frame[f"p2_{k}"].to_numpy()).argmax(1)
    assert (frame["verifiers_agree"].to_numpy() == agree).all()
    assert agree.any(), "on real faces most samples must be published"
    assert (frame.loc[~agree, "reason"] == "disagree").all()
    assert set(frame.loc[agree, "reason"]) <= {"accepted", "cell_full"}
    metrics = stage_report(params, audit, tmp_path / "report")
    assert metrics["verifier_disagreement_rate"] == pytest.approx(1 - agree.mean())
    assert metrics["samples_accepted"] == int(frame["accepted"].sum()) > 0
    est = metrics["estimated_true"]  # from the first verifier's audit confusion
    assert "unavailable" in est or len(est["probs"]) == len(metrics["cells"])
