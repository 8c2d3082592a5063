import json

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from fairsynth.core.attributes import AttributeSpace
from fairsynth.diffusion.dummy import build_tiny_sd
from fairsynth.diffusion.sampling import SamplerSettings, sample
from fairsynth.diffusion.text2image import PromptedModel, load_text2image, split_conditional
from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP
from fairsynth.guidance.guide import DistributionGuidance, GuidanceConfig
from fairsynth.guidance.trajectories import Recording, record_trajectories

SPACE = AttributeSpace.from_dict({"gender": ["female", "male"]})


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_sd")
    build_tiny_sd(folder)
    return folder / "sd"


def _adp(channels: int, spatial: int) -> TrainedADP:
    torch.manual_seed(1)
    return TrainedADP(
        ADP(channels, spatial, {"gender": 2}, ADPShape(width=8, hidden=16)).eval(), SPACE, {}
    )


def test_strength_zero_matches_diffusers_pipeline(tiny_sd):
    """With no guidance our loop is diffusers' own: same seed, same scheduler -> same images."""
    model = load_text2image(tiny_sd)
    ref = StableDiffusionPipeline.from_pretrained(
        tiny_sd, safety_checker=None, requires_safety_checker=False, use_safetensors=True,
        local_files_only=True,
    )  # fmt: skip
    ref.set_progress_bar_config(disable=True)
    for eta in (0.0, 1.0):
        kw = dict(num_inference_steps=3, guidance_scale=6.0, eta=eta, num_images_per_prompt=2)
        want = ref("a photo of a doctor", negative_prompt="blurry",
                   generator=torch.Generator().manual_seed(7), output_type="pt", **kw).images  # fmt: skip
        adp = _adp(32, 8)
        off = DistributionGuidance(
            adp,
            ("gender",),
            np.array([0.5, 0.5]),
            GuidanceConfig(strength=0.0, loss="chi2", shift=0.0),
        )
        bound = PromptedModel(model, "a photo of a doctor", "blurry", cfg_scale=6.0)
        got = sample(bound, 2, torch.Generator().manual_seed(7), SamplerSettings(3, eta),
                     guidance=off)  # fmt: skip
        assert torch.allclose((got / 2 + 0.5).clamp(0, 1), want, atol=1e-5)


def test_split_conditional_leaves_the_unconditional_half_alone():
    h = torch.randn(6, 3, 2, 2)
    out = split_conditional(lambda x: x + 1, 3)(h)
    assert torch.equal(out[:3], h[:3]) and torch.equal(out[3:], h[3:] + 1)
    assert torch.equal(split_conditional(lambda x: x + 1, 3)(h[:3]), h[:3] + 1)  # no CFG batch


def test_guidance_edits_only_the_conditional_half(tiny_sd):
    model = load_text2image(tiny_sd)
    seen = []

    class Spy(DistributionGuidance):
        def edit(self, h):
            seen.append(h.shape[0])
            return super().edit(h)

    adp = _adp(32, 8)
    g = Spy(
        adp,
        ("gender",),
        np.array([1.0, 0.0]),
        GuidanceConfig(strength=50.0, max_step=0.5, loss="chi2", shift=0.0),
    )
    guided_h, plain_h = [], []
    bound, two = PromptedModel(model, "a face", cfg_scale=5.0), SamplerSettings(steps=2)
    guided = sample(bound, 2, torch.Generator().manual_seed(3), two, guidance=g,
                    callback=lambda i: guided_h.append(i.h))  # fmt: skip
    plain = sample(bound, 2, torch.Generator().manual_seed(3), two,
                   callback=lambda i: plain_h.append(i.h))  # fmt: skip
    assert seen == [2, 2], "the guidance sees the conditional half (n), not the CFG batch (2n)"
    assert guided_h[0].shape[0] == 2, "StepInfo.h is the conditional half"
    assert not torch.allclose(guided_h[0], plain_h[0])
    assert not torch.allclose(guided, plain)


@pytest.mark.parametrize("mode", ["distribution", "sample"])
def test_guiding_both_halves_sees_the_whole_cfg_batch(tiny_sd, mode):
    """The official code's way, kept for comparison: the edit sees [uncond, cond] (2n)."""
    from fairsynth.guidance.guide import SampleGuidance

    model = load_text2image(tiny_sd)
    seen = []
    base = DistributionGuidance if mode == "distribution" else SampleGuidance
    target = np.array([1.0, 0.0]) if mode == "distribution" else np.array([0, 1])

    class Spy(base):
        def edit(self, h):
            seen.append(h.shape[0])
            return super().edit(h)

    g = Spy(
        _adp(32, 8),
        ("gender",),
        target,
        GuidanceConfig(strength=50.0, max_step=0.5, loss="chi2", shift=0.0),
    )
    both = PromptedModel(model, "a face", cfg_scale=5.0, guide_halves="both")
    two = SamplerSettings(steps=2)
    guided = sample(both, 2, torch.Generator().manual_seed(3), two, guidance=g)
    plain = sample(both, 2, torch.Generator().manual_seed(3), two)
    assert seen == [4, 4]
    assert not torch.allclose(guided, plain)
    with pytest.raises(ValueError, match="guide_halves"):
        PromptedModel(model, "a face", guide_halves="unconditional")


def test_trajectories_record_the_conditional_half(tiny_sd):
    model = load_text2image(tiny_sd)

    def labeller(images):
        return {"gender": np.eye(2)[(images.mean(axis=(1, 2, 3)) > 127).astype(int)]}

    bound = PromptedModel(model, "a face", cfg_scale=4.0)
    recording = Recording(settings=SamplerSettings(steps=2), record_every=1, batch_size=3)
    traj = record_trajectories(bound, labeller, n=3, seed=0, recording=recording)
    assert traj.h.shape[:2] == (3, 2) and traj.images.shape == (3, 32, 32, 3)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "sd").mkdir()
    with pytest.raises(FileNotFoundError, match="unet/diffusion_pytorch_model.safetensors"):
        load_text2image(tmp_path / "sd")


def _t2i_params(tmp_path, tiny_sd, mode="distribution"):
    from fairsynth.app.config import load_params
    from fairsynth.toyfaces.render import ATTRIBUTES

    torch.manual_seed(0)
    space = AttributeSpace.from_dict(ATTRIBUTES)
    adp = ADP(32, 8, {k: len(v) for k, v in ATTRIBUTES.items()}, ADPShape(width=8, hidden=16))
    TrainedADP(adp.eval(), space, {}).save(tmp_path / "adp")
    p = tmp_path / "params.yaml"
    p.write_text(
        f"model: {{path: {tiny_sd}, kind: text2image, steps: 2, eta: 0.0, cfg_scale: 4.0,\n"
        "  prompts: [{prompt: a photo of a doctor, n: 3},\n"
        "            {prompt: a photo of a nurse, negative_prompt: blurry, n: 2,\n"
        "             target: {marginals: {skin: {light: 1.0, dark: 0.0}}}}]}\n"
        f"adp: {{path: {tmp_path / 'adp'}, trajectories: 8, epochs: 1,"
        "  pseudo_labeller: 'tests.labellers:cycling',"
        "  neutral_prompts: [a photo of a person]}\n"
        "target: {marginals: {skin: {light: 0.5, dark: 0.5}}}\n"
        f"guidance: {{mode: {mode}, loss: chi2, strength: 1.0, shift: 0, batch_size: 4}}\n"
        "verify: {confidence: 0.0}\n"
        "generate: {n: 4, budget: 16, seed: 1}\n"
        f"output: {{dir: {tmp_path / 'out'}, shard_size: 3}}\n"
    )
    return load_params(p)


def test_pipeline_runs_unchanged_on_the_text_to_image_backend(tmp_path, tiny_sd):
    import json

    import pandas as pd
    import webdataset as wds

    from fairsynth.app.stages.generate import stage_generate

    params = _t2i_params(tmp_path, tiny_sd)
    assert [n for _, _, n in params.jobs()] == [3, 2]
    summary = stage_generate(params, None, progress=False)
    out = tmp_path / "out"
    frame = pd.read_parquet(out / "manifest.parquet")
    assert set(frame["prompt"]) <= {"a photo of a doctor", "a photo of a nurse"}
    assert set(frame["cfg_scale"]) == {4.0} and "negative_prompt" in frame
    # the nurse prompt has its own target (all light; what this random tiny world draws, so
    # its quota fills), the doctor prompt the top-level one (50/50)
    assert summary["prompts"][1]["quotas"] == [2, 0]
    assert sorted(summary["prompts"][0]["quotas"]) == [1, 2]
    nurse = frame[(frame["prompt"] == "a photo of a nurse") & frame["accepted"]]
    assert len(nurse) == 2 and set(nurse["skin"]) == {"light"}
    assert summary["prompts"][1]["complete"]
    for job, p in zip((0, 1), summary["prompts"], strict=True):
        acc = frame[(frame["job"] == job) & frame["accepted"]]
        assert all(a <= q for a, q in zip(p["accepted"], p["quotas"], strict=True))
        assert len(acc) == sum(p["accepted"])
    seen = list(wds.WebDataset(sorted(str(s) for s in out.glob("*.tar")), shardshuffle=False,
                               empty_check=False))  # fmt: skip
    assert sorted(s["__key__"] for s in seen) == sorted(frame.loc[frame["accepted"], "key"])
    meta = json.loads(seen[0]["json"])
    assert meta["cfg_scale"] == 4.0 and meta["prompt"].startswith("a photo of a")


def test_adp_trains_on_text_to_image_trajectories(tmp_path, tiny_sd):
    from fairsynth.app.train_adp import train_adp_from_params

    params = _t2i_params(tmp_path, tiny_sd)
    trained = train_adp_from_params(params, tmp_path / "adp_t2i")
    assert trained.meta["trajectories"] == 8
    assert trained.meta["prompts"] == ["a photo of a doctor", "a photo of a nurse",
                                       "a photo of a person"]  # fmt: skip
    assert trained.meta["cfg_scale"] == 4.0
    assert TrainedADP.load(tmp_path / "adp_t2i").model.config["in_channels"] == 32


def test_show_prompts_prints_each_prompts_quotas(tmp_path, capsys):
    from fairsynth.app.stages.__main__ import main

    index = {
        "cells": ["light", "dark"], "cfg_scale": 1.0, "generated": 7, "accepted": [3, 2],
        "samples_per_accepted": 1.4,
        "prompts": [
            {"prompt": "a doctor", "quotas": [2, 1], "accepted": [2, 1], "generated": 4},
            {"prompt": "a nurse", "quotas": [1, 2], "accepted": [1, 0], "generated": 3},
        ],
    }  # fmt: skip
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert main(["show-prompts", str(tmp_path / "index.json")]) == 0
    out = capsys.readouterr().out
    assert (
        "'a doctor': quotas [2, 1], accepted [2, 1] (met), 4 generated (1.33 per accepted)" in out
    )
    assert "'a nurse': quotas [1, 2], accepted [1, 0] (NOT met)" in out
    assert main(["show-prompts", str(tmp_path / "missing.json")]) == 2
    assert "no index at" in capsys.readouterr().err


def test_a_prompt_the_text_encoder_would_cut_is_refused(tmp_path, tiny_sd, capsys):
    """77 tokens is all the tiny CLIP encoder reads, as SD 1.5's: a longer prompt stops the run
    before anything is loaded, naming the prompt and what would be dropped."""
    from fairsynth.app.config import replace
    from fairsynth.app.preflight import check_prompts
    from fairsynth.app.stages.generate import stage_generate

    params = _t2i_params(tmp_path, tiny_sd)
    check_prompts(params)  # the short prompts pass
    long = "a photo of a doctor " + "in a long white coat " * 20 + "on the moon"
    prompts = [replace(params.model.prompts[0], prompt=long), *params.model.prompts[1:]]
    wordy = replace(params, model=replace(params.model, prompts=prompts))
    with pytest.raises(ValueError, match=r"model.prompts\[0\].prompt: \d+ tokens, but the text "
                                         r"encoder \(tokenizer\) reads 77: .*on the moon"):  # fmt: skip
        stage_generate(wordy, None, progress=False)
    assert not (tmp_path / "out").exists()
