import json

import numpy as np
import pytest
import torch

from fairsynth.app.cli import main
from fairsynth.toyfaces.render import ATTRIBUTES


def _params(
    tmp_path,
    tiny_world,
    mode="distribution",
    target="{marginals: {skin: {light: 0.5, dark: 0.5}}}",
    guidance_extra="",
):
    p = tmp_path / "params.yaml"
    named = guidance_extra.replace(" ", "")
    plain = "".join(f", {k}: {v}" for k, v in (("loss", "chi2"), ("shift", 0))
                    if f",{k}:" not in named)  # fmt: skip
    p.write_text(
        f"model: {{path: {tmp_path / 'model'}, steps: 2}}\n"
        f"adp: {{path: {tmp_path / 'adp'}}}\n"
        f"target: {target}\n"
        f"guidance: {{mode: {mode}, strength: 1.0, batch_size: 3{plain}{guidance_extra}}}\n"
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


def test_calibrate_sweeps_the_configured_guidance(tmp_path, tiny_world, capsys, monkeypatch):
    """The sweep guides as the params do (loss, protect, shift), and ``--max-quality-drop`` sets the
    rule's bound: a calibration of ``ot`` + protect is not a calibration of chi-square."""
    import fairsynth.app.calibrate as calibrate
    from fairsynth.app.calibrate import choose_strength
    from fairsynth.guidance.adp import TrainedADP
    from fairsynth.guidance.class_means import CellMeans
    from fairsynth.guidance.guided import GuidedSampler

    seen, real = [], GuidedSampler.batches
    monkeypatch.setattr(
        GuidedSampler,
        "batches",
        lambda self, *a, **k: (seen.append(self.config), real(self, *a, **k))[1],
    )
    adp = TrainedADP.load(tmp_path / "adp")  # the shift needs cell means: any will do here
    cells = tuple(len(c) for _, c in adp.space.attributes)
    adp.means = CellMeans(torch.randn(*cells, 2, 16, 8, 8).half(),
                          torch.full(cells, 5), torch.tensor([900, 100]))  # fmt: skip
    adp.save(tmp_path / "adp")
    confidences, real_score = [], calibrate.score
    monkeypatch.setattr(
        calibrate, "score", lambda *a, **k: (confidences.append(a[3]), real_score(*a, **k))[1]
    )
    extra = ", loss: ot, protect: true, shift: 0.5, temperature: 2.0, window: [0.2, 0.9]"
    p = _params(tmp_path, tiny_world, guidance_extra=extra)
    p.write_text(p.read_text() + "verify: {confidence: 0.7}\n")
    argv = ["calibrate", "--params", str(p), "--n", "3", "--strengths", "1", "100"]
    assert main([*argv, "--max-quality-drop", "0.5", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    guided = [c for c in seen if c.mode != "none"]
    assert [c.strength for c in guided] == [1.0, 100.0]
    assert all(c.loss == "ot" and c.protect and c.shift == 0.5 for c in guided)
    assert all(c.temperature == 2.0 and c.window == (0.2, 0.9) for c in guided)
    assert confidences and set(confidences) == {0.7}  # judged as generation accepts
    assert r["loss"] == "ot" and r["protect"] is True and r["max_quality_drop"] == 0.5
    assert r["shift"] == 0.5 and r["temperature"] == 2.0 and r["confidence"] == 0.7
    assert r["chosen"] == choose_strength(r["rows"], 0.5)
    with pytest.raises(SystemExit) as usage:  # not a fraction: argparse's usage error
        main([*argv, "--max-quality-drop", "1.5"])
    assert usage.value.code == 2
    assert "max-quality-drop" in capsys.readouterr().err
    assert main(argv) == 0
    assert "(loss ot, protect, shift 0.5, temperature 2, window [0.2, 0.9])" in (
        capsys.readouterr().out
    )


def test_calibrate_records_the_family_sweep_in_the_adp_folder(tmp_path, tiny_world, capsys):
    """``--record`` files the sweep in ``adp.json`` by mode, loss and protect; the weights and
    the rest of the folder's record stay as they were, and a second sweep adds beside it."""
    from fairsynth.guidance.adp import TrainedADP

    p = _params(tmp_path, tiny_world, guidance_extra=", loss: ot, protect: true")
    before = TrainedADP.load(tmp_path / "adp")
    argv = ["calibrate", "--params", str(p), "--n", "3", "--strengths", "1", "100"]
    assert main([*argv, "--record"]) == 2  # a single-target sweep is not filed
    assert "add --family" in capsys.readouterr().err
    assert main([*argv, "--family", "--record", "--json"]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out)
    assert "calibration_family['distribution, loss ot, protect']" in out.err
    p.write_text(p.read_text().replace(", loss: ot, protect: true", ", loss: chi2"))
    assert main([*argv, "--family", "--record", "--json"]) == 0
    after = TrainedADP.load(tmp_path / "adp")
    filed = after.meta["calibration_family"]
    assert set(filed) == {"distribution, loss ot, protect", "distribution, loss chi2"}
    assert filed["distribution, loss ot, protect"] == result
    assert {k: v for k, v in after.meta.items() if k != "calibration_family"} == before.meta
    for k, v in before.model.state_dict().items():
        assert torch.equal(after.model.state_dict()[k], v)


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


def test_check_says_ready_or_names_the_first_problem(tmp_path, tiny_world, capsys):
    from fairsynth.app.cli import main

    p = _params(tmp_path, tiny_world)
    assert main(["check", "--params", str(p)]) == 0
    assert "ready" in capsys.readouterr().out
    (tmp_path / "model" / "fairsynth.json").unlink()
    assert main(["check", "--params", str(p)]) == 2
    assert "makes 16x16 images with 12 channels" in capsys.readouterr().err
