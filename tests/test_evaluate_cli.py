import json

import numpy as np
import pytest

from fairsynth.app.cli import main
from fairsynth.toyfaces.render import ATTRIBUTES


def _params(
    tmp_path, tiny_world, mode="distribution", target="{marginals: {skin: {light: 0.5, dark: 0.5}}}"
):
    p = tmp_path / "params.yaml"
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        f"target: {target}\n"
        f"guidance: {{mode: {mode}, strength: 1.0, batch_size: 3}}\n"
    )
    return p


def test_evaluate_json(tmp_path, tiny_world, capsys):
    for mode in ("none", "sample", "distribution"):
        p = _params(tmp_path, tiny_world, mode)
        assert main(["evaluate", "--params", str(p), "--n", "5", "--json"]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["mode"] == mode and r["n"] == 5
        assert r["cells"] == ["light", "dark"] and abs(sum(r["hard"]) - 1) < 1e-6
        # the figures agree with each other (recomputed here from the reported fractions)
        hard = np.array(r["hard"])
        assert r["fd_hard"] == pytest.approx(float(np.sqrt(((hard - 0.5) ** 2).sum())), abs=1e-6)
        assert r["counts"] == [round(f * 5) for f in r["hard"]]
        skin = r["per_attribute"]["skin"]
        assert [skin["light"], skin["dark"]] == pytest.approx(r["hard"], abs=1e-6)
        assert set(r["per_attribute"]) == set(ATTRIBUTES)
        assert 0.0 <= r["confident_fraction"] <= 1.0 and r["seconds_per_batch"] > 0


def test_evaluate_joint_target(tmp_path, tiny_world, capsys):
    p = _params(
        tmp_path,
        tiny_world,
        target="{attributes: [skin, eyeglasses], cells: {dark|yes: 0.5, light|no: 0.5}}",
    )
    assert main(["evaluate", "--params", str(p), "--n", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["cells"] == ["light|no", "light|yes", "dark|no", "dark|yes"]
    assert r["target"] == [0.5, 0.0, 0.0, 0.5]


def test_evaluate_bad_params_name_key(tmp_path, tiny_world, capsys):
    p = _params(tmp_path, tiny_world, target="{marginals: {skin: {light: 0.7, dark: 0.7}}}")
    assert main(["evaluate", "--params", str(p), "--n", "3"]) == 2
    assert "target.skin" in capsys.readouterr().err
