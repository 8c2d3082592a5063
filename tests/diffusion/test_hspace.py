import pytest
import torch
from diffusers import UNet2DConditionModel

from fairsynth.diffusion.hspace import HSpace, resolve_layer


def _tiny_cond_unet():
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12,
        norm_num_groups=4,
        attention_head_dim=4,
    ).eval()


def _capture_and_replace(unet, call):
    with torch.no_grad():
        base = call()
        with HSpace(unet) as hs:
            same = call()
            h = hs.captured.clone()
            hs.edit = lambda h: h + 3.0 * torch.randn_like(h)
            changed = call()
            hs.edit = lambda h: h
            restored = call()
        after = call()
    assert (
        torch.allclose(base, same)
        and torch.allclose(base, restored)
        and torch.allclose(base, after)
    )
    assert not torch.allclose(base, changed, atol=1e-4)
    return h


def test_unet2d_mid_block_capture_and_replace(tiny_model):
    unet = tiny_model.unet
    x, t = torch.randn(2, 12, 16, 16), torch.tensor(500)
    h = _capture_and_replace(unet, lambda: unet(x, t).sample)
    assert h.shape == (2, 16, 8, 8)


def test_unet2d_condition_mid_block_capture_and_replace():
    unet = _tiny_cond_unet()
    x, t, ctx = torch.randn(2, 4, 8, 8), torch.tensor(10), torch.randn(2, 3, 12)
    h = _capture_and_replace(unet, lambda: unet(x, t, encoder_hidden_states=ctx).sample)
    assert h.shape == (2, 16, 4, 4)


def test_other_layer_and_bad_layer(tiny_model):
    assert resolve_layer(tiny_model.unet, "up_blocks.0") is tiny_model.unet.up_blocks[0]
    with pytest.raises(ValueError, match="no layer"):
        resolve_layer(tiny_model.unet, "bottleneck")


def test_perturbation_sensitivity_measures_h_say(tiny_model):
    from fairsynth.diffusion.probe import perturbation_sensitivity

    none = perturbation_sensitivity(tiny_model, n=2, steps=2, scale=0.0)
    some = perturbation_sensitivity(tiny_model, n=2, steps=2, scale=4.0)
    assert none == 0.0 and some > 0.0
