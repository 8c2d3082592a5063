import atexit
import os
import shutil
import tempfile

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
# hermetic: never the user's Hugging Face cache (read when huggingface_hub is first imported)
os.environ["HF_HUB_CACHE"] = tempfile.mkdtemp(prefix="fairsynth-test-hf-")
atexit.register(shutil.rmtree, os.environ["HF_HUB_CACHE"], ignore_errors=True)  # no litter
os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from fairsynth.diffusion.unconditional import DiffusionModel  # noqa: E402


@pytest.fixture(autouse=True)
def hermetic_hash_cache(tmp_path, monkeypatch):
    """Content hashes cached under the test's own folder, never the user's cache."""
    from fairsynth.core import filehash

    monkeypatch.setenv("FAIRSYNTH_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "deepface-home"))  # never the user's
    filehash._MEMO.clear()


@pytest.fixture
def tiny_model() -> DiffusionModel:
    """A tiny random UNet2DModel on 2x pixel-unshuffled 32x32 images (the toy model's shape)."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        in_channels=12,
        out_channels=12,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        attention_head_dim=8,
    ).eval()
    scheduler = DDPMScheduler(num_train_timesteps=1000, clip_sample=True)
    return DiffusionModel(unet, dict(scheduler.config), pixel_unshuffle=2)


@pytest.fixture
def tiny_world(tmp_path, tiny_model):
    """The tiny model and a random ADP over the toy attributes, saved as folders; returns both paths."""
    from fairsynth.core.attributes import AttributeSpace
    from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP
    from fairsynth.toyfaces.render import ATTRIBUTES

    tiny_model.save(tmp_path / "model")
    torch.manual_seed(0)
    adp = ADP(16, 8, {k: len(v) for k, v in ATTRIBUTES.items()}, ADPShape(width=8, hidden=16))
    TrainedADP(adp, AttributeSpace.from_dict(ATTRIBUTES), {}).save(tmp_path / "adp")
    return tmp_path / "model", tmp_path / "adp"
