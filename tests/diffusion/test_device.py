"""The GPU engine, as far as a CPU can test it: noise drawn on the CPU whatever the model's
device, a hot loop that never reads a device tensor back to the host (run on the meta device,
where any such read raises), float32 guidance for a bfloat16 UNet, device and dtype settings."""

import numpy as np
import pytest
import torch

from fairsynth.core.attributes import AttributeSpace
from fairsynth.diffusion.device import StepNoise, cpu_noise, resolve_device, torch_dtype
from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample
from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP
from fairsynth.guidance.guide import DistributionGuidance, GuidanceConfig, SampleGuidance
from fairsynth.toyfaces.render import ATTRIBUTES

SPACE = AttributeSpace.from_dict(ATTRIBUTES)


def _adp(device="cpu") -> TrainedADP:
    torch.manual_seed(0)
    model = ADP(16, 8, {k: len(v) for k, v in ATTRIBUTES.items()}, ADPShape(width=8, hidden=16))
    return TrainedADP(model.eval().requires_grad_(False), SPACE, {}).to(device)


@pytest.fixture
def randn_devices(monkeypatch):
    """Every torch.randn call's device, failing (as CUDA does) when it is not the generator's."""
    seen, real = [], torch.randn

    def randn(*args, generator=None, device=None, **kw):
        if generator is not None and device is not None:
            if torch.device(device) != generator.device:
                raise RuntimeError(f"noise drawn on {device} from a {generator.device} generator")
        seen.append(str(device or (generator.device if generator is not None else "cpu")))
        return real(*args, generator=generator, device=device, **kw)

    monkeypatch.setattr(torch, "randn", randn)
    return seen


def test_noise_is_drawn_on_the_cpu_for_a_model_elsewhere(tiny_model, randn_devices):
    expected = cpu_noise((3, 12, 16, 16), batch_generator(0, 1), "cpu")
    tiny_model.unet.to("meta")
    noise = tiny_model.noise(3, batch_generator(0, 1))
    assert noise.device.type == "meta"
    out = tiny_model.sample(
        noise, SamplerSettings(steps=3, eta=1.0), batch_generator(0, 1)
    )  # the eta noise too
    assert out.device.type == "meta"
    assert randn_devices and set(randn_devices) == {"cpu"}
    # the same draws as on the CPU: initial noise, then one per step, in the scheduler's order
    gen = batch_generator(0, 1)
    again = cpu_noise((3, 12, 16, 16), gen, "cpu")
    assert torch.equal(again, expected)


def test_step_noise_follows_the_schedulers_own_draws(tiny_model):
    """Pre-drawn eta noise leaves the samples exactly as the scheduler's own draws gave them."""
    from diffusers import DDIMScheduler

    settings = SamplerSettings(steps=4, eta=1.0)
    ours = sample(tiny_model, 2, batch_generator(3, 0), settings)
    gen = batch_generator(3, 0)
    x = torch.randn((2, 12, 16, 16), generator=gen)
    sched = DDIMScheduler.from_config(tiny_model.scheduler_config)
    sched.set_timesteps(4)
    with torch.no_grad():
        for t in sched.timesteps:
            eps = tiny_model.unet(x, t).sample
            x = sched.step(eps, t, x, eta=1.0, generator=gen).prev_sample
    assert torch.equal(ours, tiny_model.to_image_space(x).clamp(-1, 1))
    gen_a, gen_b = batch_generator(5, 5), batch_generator(5, 5)
    steps = StepNoise((2, 3), gen_a, "cpu")
    assert torch.equal(
        torch.stack([steps.next(), steps.next()]), torch.randn((2, 2, 3), generator=gen_b)
    )


@pytest.mark.parametrize("mode", ["distribution", "sample"])
def test_the_guided_loop_never_reads_a_device_tensor_back(tiny_model, mode):
    """On the meta device any .item(), float(), .cpu() or .numpy() of a tensor raises: the guided
    loop (UNet, hook, ADP, divergence, trust region, scheduler) must run through untouched."""
    tiny_model.unet.to("meta")
    adp = _adp("meta")
    config = GuidanceConfig(mode=mode, strength=10.0, loss="chi2", shift=0.0)
    names = ("skin", "eyeglasses")
    if mode == "distribution":
        guidance = DistributionGuidance(adp, names, np.full(4, 0.25), config)
    else:
        guidance = SampleGuidance(adp, names, np.arange(4) % 4, config)
    out = sample(tiny_model, 4, batch_generator(0, 0), SamplerSettings(steps=4, eta=1.0),
                 guidance=guidance)  # fmt: skip
    assert out.device.type == "meta" and out.shape == (4, 3, 32, 32)
    assert guidance.last_loss is not None and guidance.last_loss.device.type == "meta"
    with pytest.raises((RuntimeError, NotImplementedError)):
        float(guidance.last_loss)  # the check itself can fail: reads do raise on meta


def test_a_bfloat16_unet_is_guided_in_float32(tiny_model):
    adp = _adp()
    config = GuidanceConfig(strength=50.0, loss="chi2", shift=0.0)
    guidance = DistributionGuidance(adp, ("skin",), np.array([0.1, 0.9]), config)
    guidance.begin_step(torch.tensor(500), 0, 10)
    h = torch.randn(8, 16, 8, 8)
    h32 = guidance.edit(h)
    h16 = guidance.edit(h.to(torch.bfloat16))
    assert h16.dtype == torch.bfloat16 and guidance.last_loss.dtype == torch.float32
    assert torch.allclose(h16.float(), h32, atol=0.05, rtol=0.02)
    assert next(adp.model.parameters()).dtype == torch.float32

    tiny_model.unet.to(torch.bfloat16)
    out = sample(tiny_model, 2, batch_generator(0, 0), SamplerSettings(steps=3, eta=1.0),
                 guidance=guidance)  # fmt: skip
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_device_and_dtype_settings():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    assert torch_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="float8"):
        torch_dtype("float8")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device("cuda:1")


def test_params_name_a_bad_device_or_dtype(tmp_path):
    from fairsynth.app.config import ConfigError, parse_params

    for key, value, words in (("device", "gpu0", "model.device"), ("dtype", "half", "model.dtype")):
        with pytest.raises(ConfigError, match=words):
            parse_params({"model": {key: value}})
    params = parse_params({"model": {"dtype": "bfloat16"}})
    assert params.model.dtype == "bfloat16" and params.model.device == "auto"


def test_an_adp_refuses_h_of_another_layer():
    adp = _adp()
    adp.meta["layer"] = "mid_block"
    assert adp.check_layer("mid_block") is adp
    with pytest.raises(
        ValueError, match=r"trained on h of layer 'mid_block', model.layer is 'down_blocks.1'"
    ):
        adp.check_layer("down_blocks.1")


def test_the_engine_enters_the_fingerprint_only_off_cpu_float32():
    """A CPU float32 run keeps the fingerprint (and ledger) it had before dtype was a setting;
    another precision is another fingerprint, and naming a device not here does not raise."""
    from fairsynth.app.config import parse_params
    from fairsynth.app.runspec import engine_fingerprint, guidance_hash

    cpu = parse_params({"model": {"device": "cpu"}})
    assert engine_fingerprint(cpu) == {}
    bf16 = parse_params({"model": {"device": "cpu", "dtype": "bfloat16"}})
    assert engine_fingerprint(bf16) == {"engine": {"device": "cpu", "dtype": "bfloat16"}}
    assert guidance_hash(bf16) != guidance_hash(cpu)
    gpu = parse_params({"model": {"device": "cuda:3"}})
    assert engine_fingerprint(gpu)["engine"]["device"] == "cuda"
    assert guidance_hash(gpu) == guidance_hash(cpu)  # where it runs is not what it asks for


def test_the_deepface_worker_sees_the_producers_gpu_first():
    from fairsynth.verify.deepface import worker_gpu_env

    assert worker_gpu_env("cpu", {}) == {} and worker_gpu_env("cuda", {}) == {}
    assert worker_gpu_env("cuda:2", {}) == {"CUDA_VISIBLE_DEVICES": "2"}
    assert worker_gpu_env("cuda:1", {"CUDA_VISIBLE_DEVICES": "3, 5"}) == {
        "CUDA_VISIBLE_DEVICES": "5"
    }
