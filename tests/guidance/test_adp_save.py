"""Saving an ADP or a classifier swaps a complete folder in: a crash while writing leaves the old
one whole."""

import json

import pytest
import torch

from fairsynth.core.attributes import AttributeSpace
from fairsynth.guidance import adp as adp_module
from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP
from fairsynth.verify import classifier as classifier_module
from fairsynth.verify.classifier import AttributeClassifier, build

SPACE = AttributeSpace.from_dict({"skin": ["light", "dark"]})


def full_disk(*args, **kwargs):  # patched over json.dumps: the weights are written, the config not
    raise OSError("No space left on device")


def trained(seed: int, note: str) -> TrainedADP:
    torch.manual_seed(seed)
    return TrainedADP(ADP(4, 4, {"skin": 2}, ADPShape(width=4, hidden=8)), SPACE, {"note": note})


def test_a_save_replaces_the_folder_whole_and_leaves_no_scratch(tmp_path):
    trained(0, "first").save(tmp_path / "adp")
    trained(1, "second").save(tmp_path / "adp")
    assert json.loads((tmp_path / "adp" / "adp.json").read_text())["note"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adp"]
    assert (tmp_path / "adp").stat().st_mode & 0o055 == 0o055, "readable by group and others"
    for f in ("adp.json", "adp.safetensors"):
        assert (tmp_path / "adp" / f).stat().st_mode & 0o044 == 0o044, f"{f}: readable by all"


def test_a_crash_while_saving_leaves_the_old_adp(tmp_path, monkeypatch):
    first = trained(0, "first")
    first.save(tmp_path / "adp")
    before = (tmp_path / "adp" / "adp.safetensors").read_bytes()

    monkeypatch.setattr(adp_module.json, "dumps", full_disk)
    with pytest.raises(OSError):
        trained(1, "second").save(tmp_path / "adp")
    assert (tmp_path / "adp" / "adp.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "adp" / "adp.json").read_text())["note"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adp"]
    TrainedADP.load(tmp_path / "adp")


def classifier(seed: int, note: str) -> AttributeClassifier:
    torch.manual_seed(seed)
    return AttributeClassifier(build("strided", {"skin": 2}), "strided", {"skin": ("a", "b")},
                               {"note": note})  # fmt: skip


def test_a_classifier_is_saved_whole_readable_by_all_or_not_at_all(tmp_path, monkeypatch):
    classifier(0, "first").save(tmp_path / "verifier")
    before = (tmp_path / "verifier" / "model.safetensors").read_bytes()
    for f in ("config.json", "model.safetensors"):
        assert (tmp_path / "verifier" / f).stat().st_mode & 0o044 == 0o044, f"{f}: readable by all"

    monkeypatch.setattr(classifier_module.json, "dumps", full_disk)
    with pytest.raises(OSError):
        classifier(1, "second").save(tmp_path / "verifier")
    assert (tmp_path / "verifier" / "model.safetensors").read_bytes() == before
    assert json.loads((tmp_path / "verifier" / "config.json").read_text())["note"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["verifier"]
    AttributeClassifier.load(tmp_path / "verifier")
