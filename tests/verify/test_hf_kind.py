"""A Hugging Face image-classification folder as a verifier kind, on a tiny random ViT built
here (as transformers' own tests build theirs): recognised by its config, its labels mapped
onto the params' classes by a table (a wrong table refused by name), any image size resized
by its own processor, its files listed by weights check."""

import numpy as np
import pytest
import torch

LABELS = {0: "Light skin", 1: "Dark skin", 2: "not a face"}


@pytest.fixture
def tiny_vit(tmp_path):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32, num_labels=3,
                       id2label=LABELS, label2id={v: k for k, v in LABELS.items()})  # fmt: skip
    folder = tmp_path / "vit"
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def _params(tmp_path, folder, table):
    from fairsynth.app.config import parse_params

    return parse_params({
        "attributes": {"skin": ["light", "dark"]},
        "target": {"marginals": {"skin": {"light": 0.5, "dark": 0.5}}},
        "verify": {"verifier": str(folder), "hf_labels": {str(folder): table}},
        "output": {"dir": str(tmp_path / "out")},
    })  # fmt: skip


def test_an_hf_classifier_judges_through_its_label_table(tmp_path, tiny_vit):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    from fairsynth.app.resolve import verifier_spec
    from fairsynth.app.weights import check_weights
    from fairsynth.verify import load_verifier
    from fairsynth.verify.kinds import HF, kind_of

    assert kind_of(str(tiny_vit)).name == HF
    params = _params(tmp_path, tiny_vit, {"skin": {"Light skin": "light", "Dark skin": "dark"}})
    rows = [r for r in check_weights(params) if "image classifier" in r["what"]]
    assert [r["file"] for r in rows] == ["config.json", "model.safetensors",
                                         "preprocessor_config.json"] and all(r["present"] for r in rows)  # fmt: skip
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    verdict = load_verifier(verifier_spec(params), params.attribute_space()).verify(images)
    assert verdict.rejects == [None, None, None]  # 64x64: resized by the model's processor
    model = AutoModelForImageClassification.from_pretrained(tiny_vit, local_files_only=True)
    inputs = AutoImageProcessor.from_pretrained(tiny_vit)(images=list(images), return_tensors="pt")
    with torch.no_grad():
        p = model(**inputs).logits.softmax(-1).numpy()
    expect = p[:, :2] / p[:, :2].sum(1, keepdims=True)  # "not a face" is left out
    assert np.allclose(verdict.probs["skin"], expect, atol=1e-5)


def test_a_wrong_label_table_is_refused_by_name(tmp_path, tiny_vit):
    from fairsynth.app.config import ConfigError

    with pytest.raises(ConfigError, match=r"skin: \['Dark'\] are not labels of the model"):
        _params(tmp_path, tiny_vit, {"skin": {"Light skin": "light", "Dark": "dark"}})
    with pytest.raises(ConfigError, match=r"leaves \['dark'\] class\(es\)"):
        _params(tmp_path, tiny_vit, {"skin": {"Light skin": "light"}})
    from fairsynth.app.config import parse_params

    with pytest.raises(ConfigError, match=r"verify.verifier: no table for"):
        parse_params({"attributes": {"skin": ["light", "dark"]},
                      "target": {"marginals": {"skin": {"light": 0.5, "dark": 0.5}}},
                      "verify": {"verifier": str(tiny_vit)},
                      "output": {"dir": str(tmp_path / "out")}})  # fmt: skip
