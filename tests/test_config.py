from pathlib import Path

import pytest

from fairsynth.app.config import ConfigError, load_params, parse_params


def test_repo_params_load():
    from fairsynth.app.config import yaml_load

    root = Path(__file__).resolve().parents[1]  # not the working directory
    raw = yaml_load((root / "params.yaml").read_text())
    p = load_params(root / "params.yaml")
    assert (
        p.reference.n == raw["reference"]["n"]
        and p.audit_model.steps == raw["audit_model"]["steps"]
    )
    assert p.guidance.strength == raw["guidance"]["strength"] and p.model.layer == "mid_block"
    assert p.attribute_space().as_dict() == raw["attributes"]


@pytest.mark.parametrize(
    "raw,key",
    [
        ({"bogus": {}}, "bogus"),
        ({"reference": {"nn": 3}}, "reference.nn"),
        ({"reference": {"n": "many"}}, "reference.n"),
        ({"reference": {"n": 0}}, "reference.n"),
        ({"audit_model": {"steps": 2.5}}, "audit_model.steps"),
        ({"audit_model": {"batch_size": True}}, "audit_model.batch_size"),
        ({"audit_model": []}, "audit_model"),
    ],
)
def test_bad_params_name_the_key(raw, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_params(raw)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")
