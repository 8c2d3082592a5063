import json

import pytest
import torch

from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample, to_uint8
from fairsynth.diffusion.unconditional import load_diffusion_model


def test_save_load_round_trip(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "m")
    for f in (
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "fairsynth.json",
    ):
        assert (tmp_path / "m" / f).is_file(), f
    loaded = load_diffusion_model(tmp_path / "m")
    assert loaded.pixel_unshuffle == 2 and loaded.image_size == 32 and loaded.image_channels == 3
    x = torch.randn(2, 12, 16, 16)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        assert torch.allclose(tiny_model.unet(x, t).sample, loaded.unet(x, t).sample)
    index = json.loads((tmp_path / "m" / "model_index.json").read_text())
    assert index["unet"] == ["diffusers", "UNet2DModel"]


def test_missing_files_named(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "m")
    (tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model.safetensors"):
        load_diffusion_model(tmp_path / "m")


def test_pickle_only_checkpoint_refused(tmp_path, tiny_model):
    tiny_model.save(tmp_path / "m")
    st = tmp_path / "m" / "unet" / "diffusion_pytorch_model.safetensors"
    st.unlink()
    torch.save(
        tiny_model.unet.state_dict(), tmp_path / "m" / "unet" / "diffusion_pytorch_model.bin"
    )
    with pytest.raises(FileNotFoundError, match="pickle"):
        load_diffusion_model(tmp_path / "m")


def test_pixel_shuffle_inverse(tiny_model):
    img = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(tiny_model.to_image_space(tiny_model.to_model_space(img)), img)


def test_sampling_shape_determinism_and_callback(tiny_model):
    seen = []
    four = SamplerSettings(steps=4)
    a = sample(
        tiny_model, 3, batch_generator(7, 0), four, callback=lambda s: seen.append(s.timestep)
    )
    b = sample(tiny_model, 3, batch_generator(7, 0), four)
    c = sample(tiny_model, 3, batch_generator(7, 1), four)
    assert a.shape == (3, 3, 32, 32) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(seen) == 4 and seen == sorted(seen, reverse=True)
    u8 = to_uint8(a)
    assert u8.shape == (3, 32, 32, 3) and u8.dtype.name == "uint8"


def test_sampling_rejects_bad_args(tiny_model):
    with pytest.raises(ValueError):
        sample(tiny_model, 0, batch_generator(0, 0))
    with pytest.raises(ValueError):
        sample(tiny_model, 2, batch_generator(0, 0), SamplerSettings(steps=0))
