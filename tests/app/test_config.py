from pathlib import Path

import pytest

from fairsynth.app.config import ConfigError, load_params, parse_params


def test_repo_params_load():
    from fairsynth.app.config import yaml_load

    root = Path(__file__).resolve().parents[2]  # not the working directory
    raw = yaml_load((root / "params.yaml").read_text())
    p = load_params(root / "params.yaml")
    assert (
        p.reference.n == raw["reference"]["n"]
        and p.audit_model.steps == raw["audit_model"]["steps"]
    )
    assert p.guidance.batch_size == raw["guidance"]["batch_size"] and p.model.layer == "mid_block"
    assert p.attribute_space().as_dict() == raw["attributes"]


def test_a_params_file_naming_only_what_differs_gets_the_shipped_settings(tmp_path):
    """The schema's defaults are the shipped ones: a params file with only the reference, the
    attributes, the target and the output gets params.yaml's model, guidance and verify."""
    from fairsynth.app.config import as_dict, yaml_load
    from fairsynth.guidance.config import GuidanceConfig

    root = Path(__file__).resolve().parents[2]
    shipped = load_params(root / "params.yaml")
    raw = yaml_load((root / "params.yaml").read_text())
    minimal = parse_params({key: raw[key] for key in ("reference", "attributes", "target")}
                           | {"output": {"dir": str(tmp_path / "out")}})  # fmt: skip
    for section in ("model", "guidance", "verify"):
        assert as_dict(getattr(minimal, section)) == as_dict(getattr(shipped, section)), section
    guidance = minimal.guidance.to_config()
    assert guidance == GuidanceConfig()  # one set of defaults: the guidance layer's
    assert (guidance.loss, guidance.shift, guidance.strength) == ("ot", 1.0, 215.0)


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


# as_dict is hashed into dataset fingerprints: keys, their order and the types of the values
# (1 vs 1.0) must stay what dataclasses.asdict gave for the dataclasses the models replaced.
DEFAULTS = {
    "reference": {"source": "toyfaces", "path": "data/reference", "labels": None, "n": 20000,
                  "seed": 0, "columns": None, "classes": None, "ignore_case": True},
    "audit_model": {"n": 1000, "seed": 0, "steps": 50, "eta": 1.0, "batch_size": 64},
    "model": {"path": "toyfaces", "kind": "unconditional", "steps": 50, "eta": 1.0,
              "layer": "mid_block", "local_files_only": True, "cfg_scale": 7.5, "prompts": None,
              "device": "auto", "dtype": "float32", "compile": False, "scheduler": None,
              "scheduler_options": None, "resolution": None},
    "attributes": None,
    "target": None,
    "adp": {"path": "toyfaces", "pseudo_labeller": "toyfaces", "neutral_prompts": None,
            "trajectories": 2048, "record_every": 2, "epochs": 30, "lr": 0.0003, "dropout": 0.2,
            "weight_decay": 0.01, "seed": 0, "max_rejected": 0.05},
    "guidance": {"mode": "distribution", "loss": "ot", "strength": 215.0, "window": [0.0, 1.0],
                 "temperature": 1.0, "max_step": 0.5, "batch_size": 64, "residual": False,
                 "protect": False, "shift": 1.0},
    "verify": {"verifier": "toyfaces", "second": None, "confidence": 0.9, "audit_n": 256,
               "deepface": {"detector": "skip", "home": None, "allow_download": False,
                            "batch_size": 32, "retries": 2, "attributes": None},
               "hf_labels": None, "correct_quotas": False},
    "generate": {"mode": "standalone", "n": 512, "seed": 0, "budget": 4096,
                 "dataset": "fairsynth", "min_batch": 8, "accept_partial": False},
    "output": {"dir": "data/synthetic", "shard_size": 256, "audit_dir": "data/audit",
               "report_dir": "data/report"},
    "scale": {"mode": "local", "window": 8, "address": None, "n_workers": 2,
              "threads_per_worker": 1, "resources": None, "task_resources": None, "retries": 2,
              "overlap": "auto"},
    "downstream": {"label": "eyeglasses", "sensitive": "skin", "reference_n": 2000,
                   "control_dir": "data/downstream/rejection", "control_budget": 1.0,
                   "out": "data/downstream", "test": "toyfaces", "test_per_cell": 250,
                   "test_seed": 99, "seeds": list(range(20)), "arch": "strided", "steps": 300,
                   "batch_size": 64, "lr": 0.002, "num_workers": 0, "workers": 2, "settings": None,
                   "hard": {"reference_n": 100, "label_noise": 0.2, "noise_seed": 0}},
    "card": {"name": "fairsynth-dataset", "license": "cc-by-4.0",
             "use_cases": "Training and evaluating attribute classifiers whose accuracy must hold "
                          "across the balanced groups; studying debiasing. Not for identifying "
                          "people."},
    "seed": 0,
}  # fmt: skip
ROOT = Path(__file__).resolve().parents[2]


def test_as_dict_of_the_defaults_is_the_fingerprinted_dict():
    import json

    from fairsynth.app.config import as_dict

    got = as_dict(parse_params({}))
    assert json.dumps(got) == json.dumps(DEFAULTS)  # order and 1 vs 1.0 included


def test_as_dict_of_params_yaml_has_the_declared_sections_and_keys_in_order():
    from fairsynth.app.config import as_dict

    got = as_dict(load_params(ROOT / "params.yaml"))
    assert list(got) == list(DEFAULTS)
    for section, keys in DEFAULTS.items():
        if isinstance(keys, dict):
            assert list(got[section]) == list(keys), section
    assert list(got["verify"]["deepface"]) == list(DEFAULTS["verify"]["deepface"])
    assert got["target"] == {"marginals": {"skin": {"light": 0.5, "dark": 0.5},
                                           "eyeglasses": {"no": 0.5, "yes": 0.5}},
                             "attributes": None, "cells": None}  # fmt: skip
    assert isinstance(got["guidance"]["strength"], float)
    assert got["guidance"]["window"] == [0.0, 1.0]


@pytest.mark.parametrize(
    "preset",
    [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))],
    ids=lambda p: p.name,
)
def test_as_dict_is_plain_data_that_parses_back(preset):
    from fairsynth.app.config import as_dict

    params = load_params(preset)
    data = as_dict(params)

    def plain(value):
        if isinstance(value, dict):
            return all(plain(v) for v in value.values())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | bool)

    assert plain(data)
    assert parse_params(data) == params
    for name in ("guidance", "model", "adp", "output"):  # vars() of a section: its fields only
        section = getattr(params, name)
        assert list(vars(section)) == list(type(section).model_fields)
        assert vars(section) == dict(section)


def test_yaml_numbers_and_booleans_are_not_coerced():
    p = parse_params({"guidance": {"strength": 10, "window": [0, 1]}, "model": {"eta": 0}})
    assert p.guidance.strength == 10.0 and isinstance(p.guidance.strength, float)
    assert isinstance(p.model.eta, float)
    assert p.guidance.window == [0, 1] and isinstance(p.guidance.window, list)
    refused = [
        ({"guidance": {"strength": True}}, "guidance.strength: expected a number, got True"),
        ({"seed": True}, "seed: expected an integer, got True"),
        ({"seed": "1"}, "seed: expected an integer, got '1'"),
        ({"model": {"local_files_only": 1}}, "model.local_files_only: expected true/false, got 1"),
        ({"guidance": {"window": [True, 1]}}, r"guidance.window: must be \[start, end\]"),
    ]
    for raw, message in refused:
        with pytest.raises(ConfigError, match=f"^{message}"):
            parse_params(raw)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"guidance": {"strenght": 1}}, "unknown key(s): guidance.strenght (allowed in guidance: "
         "batch_size, loss, max_step, mode, protect, residual, shift, strength, temperature, window)"),
        ({"guidance": {"strength": -1}}, "guidance.strength: must be a finite number >= 0"),
        ({"guidance": {"mode": "magic"}},
         "guidance.mode: must be one of ('none', 'sample', 'distribution'), got 'magic'"),
        ({"model": {"eta": 1.5}}, "model.eta: must be in [0, 1]"),
        ({"adp": {"dropout": 1.0}}, "adp.dropout: must be in [0, 1)"),
        ({"adp": {"lr": 0}}, "adp.lr: must be > 0"),
        ({"scale": {"mode": "ray"}}, "scale.mode: must be one of ['local', 'dask']"),
        ({"downstream": {"seeds": [1, "a"]}}, "downstream.seeds[1]: expected an integer, got 'a'"),
        ({"model": {"kind": "text2image", "prompts": [{"prompt": "a", "n": 0}]}},
         "model.prompts[0].n: must be >= 1"),
        ({"model": {"kind": "text2image", "prompts": [{"prompt": "a", "target": {}}]}},
         "model.prompts[0].target: give exactly one of 'marginals' or 'cells' (with 'attributes')"),
        ({"target": {"cells": {"a": 1.0}}}, "target.attributes: required with 'cells'"),
        ({"scale": {"resources": {"GPU": float("nan")}}},
         "scale.resources.GPU: must be a finite number, got nan"),
        ({"generate": {"n": 2**53 + 1}},
         "generate.n: 9007199254740993 is out of range (|n| <= 9,007,199,254,740,992)"),
        ({"verify": {"deepface": []}}, "verify.deepface: expected a mapping, got list"),
        ([], "params: expected a mapping, got list"),
    ],
)  # fmt: skip
def test_messages_are_one_line_starting_with_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        parse_params(raw)
    assert str(err.value) == message


def test_replace_returns_a_validated_copy():
    from fairsynth.app.config import as_dict, replace

    params = load_params(ROOT / "params.yaml")
    other = replace(params, output=replace(params.output, dir="elsewhere"), seed=3)
    assert (other.output.dir, other.seed, params.output.dir, params.seed) == (
        "elsewhere", 3, "data/shards", 0)  # fmt: skip
    assert other.guidance is params.guidance and replace(params) == params
    with pytest.raises(ConfigError, match="^n: must be >= 1"):
        replace(params.generate, n=0)
    with pytest.raises(ConfigError, match=r"^unknown key\(s\): shard \(allowed in OutputConfig"):
        replace(params.output, shard=1)
    with pytest.raises(ConfigError, match="^guidance: expected a mapping, got str"):
        replace(params, guidance="strong")
    with pytest.raises(ValueError):
        params.seed = 1  # frozen
    # the rules across sections are a params file's: a derived run may write where it reads
    control = replace(params, output=replace(params.output, dir=params.downstream.control_dir))
    with pytest.raises(ConfigError, match=r"^downstream\.\w+: .* overlaps output\.dir"):
        parse_params(as_dict(control))


def test_settings_added_later_keep_the_params_hash_at_their_defaults():
    """The card's params hash, the guidance hash (per sample in the manifest) and the ADP's
    inputs of a run that leaves the later settings at their defaults are what they were before
    those settings existed."""
    import hashlib
    import json

    from fairsynth.app.config import as_dict
    from fairsynth.app.config.base import LATER_KEYS
    from fairsynth.app.stages.publication import params_hash

    params = load_params(ROOT / "params.yaml")
    before = as_dict(params)
    for section, key in LATER_KEYS:
        del before[section][key]
    blob = json.dumps(before, sort_keys=True, default=str)
    assert params_hash(params) == hashlib.sha256(blob.encode()).hexdigest()[:16]
    partial = parse_params({"generate": {"accept_partial": True}})
    assert params_hash(partial) != params_hash(parse_params({}))
    from fairsynth.app.runspec import guidance_hash

    stricter = parse_params({"adp": {"max_rejected": 0.01}})
    assert guidance_hash(stricter) != guidance_hash(parse_params({}))
    hashed_json, dumps = [], json.dumps
    import fairsynth.app.runspec as runspec

    runspec.json.dumps = lambda obj, **k: (hashed_json.append(obj), dumps(obj, **k))[1]
    try:
        guidance_hash(params)
    finally:
        runspec.json.dumps = dumps
    assert "max_rejected" not in hashed_json[-1]["adp"]
