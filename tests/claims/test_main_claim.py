"""The project's main claim, in CI, on the shipped toy DDPM and the shipped ADP: distribution
guidance moves the *verified* distribution to the target, at full quality; and in the pipeline
the quotas are met because of guidance (the same run unguided falls short).

Small on purpose (64 samples, 20 DDIM steps: under a minute here); the full-size measurement
is ``benchmarks/guidance.py``."""

import pytest
import yaml

from fairsynth.app.config import load_params, parse_params
from fairsynth.app.evaluate import evaluate
from fairsynth.app.stages.generate import stage_generate

TARGETS = {
    "skin 50/50": {"marginals": {"skin": {"light": 0.5, "dark": 0.5}}},
    "skin x eyeglasses uniform": {
        "marginals": {"skin": {"light": 0.5, "dark": 0.5}, "eyeglasses": {"no": 0.5, "yes": 0.5}}
    },
}


def _evaluate(target: dict, mode: str) -> dict:
    params = parse_params({
        "model": {"steps": 20}, "adp": {"path": "toyfaces"}, "target": target, "seed": 0,
        "guidance": {"mode": mode, "batch_size": 64},  # the shipped guidance: the defaults
    })  # fmt: skip
    return evaluate(params, 64)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(TARGETS))
def test_distribution_guidance_brings_the_verified_distribution_to_the_target(name):
    unguided = _evaluate(TARGETS[name], "none")
    guided = _evaluate(TARGETS[name], "distribution")
    # measured: skin 0.376 -> 0.044, joint 0.508 -> 0.038 (64 samples, 20 steps)
    assert unguided["fd_hard"] >= 0.25, unguided["fd_hard"]  # the model's own bias is far off
    assert guided["fd_hard"] <= 0.12, guided["fd_hard"]
    assert guided["fd_hard"] <= unguided["fd_hard"] / 3
    assert guided["confident_fraction"] >= 0.95
    assert guided["confident_fraction"] >= unguided["confident_fraction"] - 0.03


@pytest.mark.slow
def test_the_quotas_are_met_because_of_guidance(tmp_path):
    """75 % dark (the model draws ~21 %): 32 samples, a budget of 64. Guided, the quotas fill
    in about 32 generated; unguided, the same budget leaves the dark cell short."""
    summaries = {}
    for mode in ("distribution", "none"):
        run = tmp_path / mode
        run.mkdir()
        (run / "params.yaml").write_text(yaml.safe_dump({
            "model": {"steps": 20}, "adp": {"path": "toyfaces"},
            "target": {"marginals": {"skin": {"light": 0.25, "dark": 0.75}}},
            "guidance": {"mode": mode, "batch_size": 16},
            "generate": {"n": 32, "budget": 64, "min_batch": 16, "seed": 0},
            "verify": {"confidence": 0.9}, "output": {"dir": str(run / "out")},
        }))  # fmt: skip
        summaries[mode] = stage_generate(load_params(run / "params.yaml"), None, progress=False)
    guided, unguided = summaries["distribution"], summaries["none"]
    assert guided["quotas"] == [8, 24]
    assert guided["complete"] and guided["accepted"] == [8, 24] and guided["generated"] <= 48
    assert not unguided["complete"] and unguided["generated"] == 64
    assert unguided["accepted"][1] < 24 and unguided["shortfall"].get("dark", 0) > 0
