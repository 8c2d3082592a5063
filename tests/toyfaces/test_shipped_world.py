"""The embedded default world: shipped weights load through the public code paths and work."""

import json

import numpy as np
import pytest

from fairsynth.diffusion.unconditional import load_diffusion_model
from fairsynth.toyfaces import DDPM_DIR, PSEUDO_LABELLER_DIR, VERIFIER_DIR
from fairsynth.toyfaces.classifiers import AttributeClassifier, accuracy_on_fresh_renders
from fairsynth.toyfaces.render import ATTRIBUTES, render_batch


@pytest.mark.parametrize(
    "path", [PSEUDO_LABELLER_DIR, VERIFIER_DIR], ids=["pseudo_labeller", "verifier"]
)
def test_shipped_classifier_accuracy(path):
    clf = AttributeClassifier.load(path)
    acc = accuracy_on_fresh_renders(clf, n=2000, seed=424_242)
    assert set(acc) == set(ATTRIBUTES)
    assert min(acc.values()) >= 0.99, acc


def test_classifiers_are_independent():
    a = AttributeClassifier.load(PSEUDO_LABELLER_DIR)
    b = AttributeClassifier.load(VERIFIER_DIR)
    assert a.arch != b.arch and a.meta["seed"] != b.meta["seed"]
    images, _ = render_batch(64, seed=11)
    assert a.features(images).shape[1] != b.features(images).shape[1] or a.arch != b.arch


def test_classifier_rejects_bad_input():
    clf = AttributeClassifier.load(VERIFIER_DIR)
    with pytest.raises(ValueError, match="shape"):
        clf.predict_proba(np.zeros((2, 32, 32), dtype=np.uint8))


def test_shipped_ddpm_loads_like_a_model_id():
    model = load_diffusion_model(DDPM_DIR)
    assert model.image_size == 32 and model.image_channels == 3
    extra = json.loads((DDPM_DIR / "fairsynth.json").read_text())
    assert extra["training"]["steps"] > 0
    assert (DDPM_DIR / "unet" / "diffusion_pytorch_model.safetensors").is_file()


@pytest.mark.slow
def test_shipped_ddpm_draws_faces_with_the_reference_bias():
    """A short run (64 samples, 20 steps; the full audit is the CLI's, 1,000 at 50 steps:
    max |diff| 0.048): confidently classified faces, in the reference's proportions."""
    from fairsynth.toyfaces.audit_model import Sampling, audit_model
    from fairsynth.toyfaces.dataset import DEFAULT_BIAS

    how = Sampling(n=64, seed=1, steps=20, batch_size=64)
    report = audit_model(how, reference=None, grid_path=None)
    assert report["confident_fraction"] >= 0.95, report
    skin = report["attributes"]["skin"]
    assert skin["reference"]["dark"] == pytest.approx(DEFAULT_BIAS["skin"][1])
    # 64 samples: a fraction's standard error is ~0.05; the bias is 20 % dark, 15 % glasses
    assert report["max_abs_diff"] <= 0.15, report["attributes"]
    assert skin["model"]["dark"] < 0.4 and report["attributes"]["eyeglasses"]["model"]["yes"] < 0.35


def test_verifier_confidence_means_a_clear_face():
    """Outlier exposure: confident on clean renders, not on noise-drowned ones."""
    import torch

    from fairsynth.verify.classifier import to_tensor

    clf = AttributeClassifier.load(VERIFIER_DIR)
    x = to_tensor(render_batch(256, seed=5)[0])

    def confident(images):
        p = clf.predict_proba(images)
        return (np.stack([v.max(1) for v in p.values()]).min(0) >= 0.9).mean()

    assert confident(x) >= 0.99
    gen = torch.Generator().manual_seed(0)
    assert confident((x + 0.8 * torch.randn(x.shape, generator=gen)).clamp(-1, 1)) <= 0.05


@pytest.mark.slow
def test_shipped_text_to_image_model_draws_each_prompts_bias():
    """A few samples per prompt from the trained toy text-to-image model: the nurse prompt
    (trained 80 % dark-skinned) draws far more dark skin than the doctor (10 %), the teacher
    (80 %) far more eyeglasses than the nurse (15 %), and the faces are clear."""
    from fairsynth.toyfaces.audit_model import Sampling
    from fairsynth.toyfaces.audit_t2i import audit_text2image

    report = audit_text2image(Sampling(n=24, steps=10, batch_size=24), cfg_scales=(1.0,))
    rows = {p: r["by_cfg"]["1"] for p, r in report["prompts"].items()}
    assert set(rows) >= {"a photo of a doctor", "a photo of a nurse", "a photo of a teacher"}
    dark = {p: r["attributes"]["skin"]["dark"] for p, r in rows.items()}
    glasses = {p: r["attributes"]["eyeglasses"]["yes"] for p, r in rows.items()}
    assert dark["a photo of a nurse"] - dark["a photo of a doctor"] >= 0.4, dark
    assert glasses["a photo of a teacher"] - glasses["a photo of a nurse"] >= 0.4, glasses
    assert min(r["confident_fraction"] for r in rows.values()) >= 0.8, rows
