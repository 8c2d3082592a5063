import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from fairsynth.adp import ADP, TrainedADP, record_trajectories
from fairsynth.attributes import AttributeSpace
from fairsynth.guidance import DistributionGuidance, GuidanceConfig
from fairsynth.text2image import load_text2image, sample_text2image, split_conditional
from tests.tiny_sd import build_tiny_sd

SPACE = AttributeSpace.from_dict({"gender": ["female", "male"]})


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_sd")
    build_tiny_sd(folder)
    return folder / "sd"


def _adp(channels: int, spatial: int) -> TrainedADP:
    torch.manual_seed(1)
    return TrainedADP(ADP(channels, spatial, {"gender": 2}, width=8, hidden=16).eval(), SPACE, {})


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
            adp, ("gender",), np.array([0.5, 0.5]), GuidanceConfig(strength=0.0)
        )
        got = sample_text2image(model, "a photo of a doctor", 2, torch.Generator().manual_seed(7),
                                steps=3, cfg_scale=6.0, negative_prompt="blurry", eta=eta,
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
    g = Spy(adp, ("gender",), np.array([1.0, 0.0]), GuidanceConfig(strength=50.0, max_step=0.5))
    guided_h, plain_h = [], []
    guided = sample_text2image(model, "a face", 2, torch.Generator().manual_seed(3), steps=2,
                               cfg_scale=5.0, guidance=g, callback=lambda i: guided_h.append(i.h))  # fmt: skip
    plain = sample_text2image(model, "a face", 2, torch.Generator().manual_seed(3), steps=2,
                              cfg_scale=5.0, callback=lambda i: plain_h.append(i.h))  # fmt: skip
    assert seen == [2, 2], "the guidance sees the conditional half (n), not the CFG batch (2n)"
    assert guided_h[0].shape[0] == 2, "StepInfo.h is the conditional half"
    assert not torch.allclose(guided_h[0], plain_h[0])
    assert not torch.allclose(guided, plain)


def test_trajectories_record_the_conditional_half(tiny_sd):
    model = load_text2image(tiny_sd)

    def labeller(images):
        return {"gender": np.eye(2)[(images.mean(axis=(1, 2, 3)) > 127).astype(int)]}

    def sampler(n, generator, callback):
        return sample_text2image(model, "a face", n, generator, steps=2, cfg_scale=4.0,
                                 callback=callback)  # fmt: skip

    traj = record_trajectories(model, labeller, n=3, seed=0, steps=2, record_every=1,
                               batch_size=3, sampler=sampler)  # fmt: skip
    assert traj.h.shape[:2] == (3, 2) and traj.images.shape == (3, 32, 32, 3)


def test_missing_files_are_named(tmp_path):
    (tmp_path / "sd").mkdir()
    with pytest.raises(FileNotFoundError, match="unet/diffusion_pytorch_model.safetensors"):
        load_text2image(tmp_path / "sd")
