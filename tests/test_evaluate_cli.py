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


def test_calibrate_family_sweeps_uniform_and_reversed_targets(tmp_path, tiny_world, capsys):
    """``fairsynth calibrate --family``: the uniform target plus each attribute's unguided
    fractions reversed; each row's FD is its worst target's, the rule reads every target."""
    from fairsynth.app.calibrate import choose_strength

    p = _params(tmp_path, tiny_world)
    argv = ["calibrate", "--params", str(p), "--n", "3", "--strengths", "1", "100", "--family"]
    assert main([*argv, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    names = list(r["targets"])
    assert len(names) == 1 + len(ATTRIBUTES) and names[0].startswith("uniform over")
    assert [row["strength"] for row in r["rows"]] == [0.0, 1.0, 100.0]
    for row in r["rows"]:
        assert list(row["by_target"]) == names
        assert row["fd_hard"] == max(t["fd_hard"] for t in row["by_target"].values())
        assert row["confident_fraction"] == min(
            t["confident_fraction"] for t in row["by_target"].values()
        )
    assert r["chosen"] == choose_strength(r["rows"], 0.03)
    # each reversed target gives the attribute's commonest unguided class the rarest share
    for name, classes in ATTRIBUTES.items():
        (label,) = [k for k in names if k.startswith(f"{name} reversed")]
        assert abs(sum(r["targets"][label]) - 1) < 1e-6 and len(r["targets"][label]) == len(classes)
    assert main(argv) == 0
    assert "chosen:" in capsys.readouterr().out


def test_reversed_targets_swap_the_commonest_and_rarest_class():
    from fairsynth.app.calibrate import reversed_targets
    from fairsynth.core.attributes import AttributeSpace

    space = AttributeSpace.from_dict({"skin": ["light", "dark"], "hair": ["a", "b", "c"]})
    seen = {"per_attribute": {"skin": {"light": 0.8, "dark": 0.2},
                              "hair": {"a": 0.1, "b": 0.6, "c": 0.3}}}  # fmt: skip
    out = reversed_targets(space, seen)
    skin = next(t for k, t in out.items() if k.startswith("skin"))
    hair = next(t for k, t in out.items() if k.startswith("hair"))
    assert skin.space.names == ("skin",) and skin.probs == pytest.approx([0.2, 0.8], abs=2e-3)
    assert hair.probs == pytest.approx([0.6, 0.1, 0.3], abs=2e-3)  # a <-> b, c stays


def test_the_family_rule_needs_quality_on_every_target():
    from fairsynth.app.calibrate import choose_strength

    def row(s, fds, confs):
        by = {
            k: {"fd_hard": f, "confident_fraction": c}
            for k, f, c in zip("xy", fds, confs, strict=True)
        }
        return {"strength": s, "fd_hard": max(fds), "confident_fraction": min(confs),
                "by_target": by}  # fmt: skip

    rows = [row(0.0, [0.3, 0.5], [1.0, 0.9]), row(10.0, [0.1, 0.2], [0.99, 0.89]),
            row(100.0, [0.02, 0.05], [0.95, 0.89])]  # fmt: skip
    # 100 is within 0.03 of unguided on y (0.9) but not on x (1.0): per target, not the minimum
    assert choose_strength(rows, 0.03) == 10.0
    assert choose_strength(rows, 0.06) == 100.0
