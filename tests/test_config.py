import pytest

from fairsynth.config import ConfigError, load_params, parse_params


def test_repo_params_load():
    p = load_params("params.yaml")
    assert p.reference.n >= 1 and p.audit_model.steps >= 1


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
