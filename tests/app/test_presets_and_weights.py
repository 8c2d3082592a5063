import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from fairsynth.app.config import ConfigError, load_params, parse_params, replace
from fairsynth.app.resolve import model_spec, prompt_spec, sampler_settings
from fairsynth.app.weights import MissingFiles, check_weights, require_weights
from fairsynth.diffusion.backends import bind_prompt, load_model
from fairsynth.diffusion.dummy import (
    build_tiny_flux,
    build_tiny_sd,
    build_tiny_sd3,
    build_tiny_sdxl,
)
from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample
from fairsynth.diffusion.unconditional import load_diffusion_model

ROOT = Path(__file__).resolve().parents[2]
# a preset's name prefix -> the tiny random pipeline in its layout, its folder, image size
TINY_LAYOUTS = {
    "sd15": (build_tiny_sd, "sd", 32),
    "toyfaces": (build_tiny_sd, "sd", 32),
    "sdxl": (build_tiny_sdxl, "sdxl", 32),
    "sd3": (build_tiny_sd3, "sd3", 16),
    "flux": (build_tiny_flux, "flux", 16),
}
PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def _tiny_hub_layout(folder: Path) -> None:
    """A tiny unconditional DDPM saved by diffusers itself: google/ddpm-celebahq-256's layout."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
        layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4, attention_head_dim=8,
    )  # fmt: skip
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(
        folder, safe_serialization=True
    )


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_are_valid_and_load_a_model_in_their_layout(preset, tmp_path):
    params = load_params(preset)
    assert params.model.local_files_only, "presets never download at run time"
    if params.model.kind == "text2image":
        family = preset.name.split("-")[0]  # the tiny model in the preset's layout
        build, name, size = TINY_LAYOUTS.get(family, TINY_LAYOUTS["sd15"])
        build(tmp_path)
        resolution = 16 if family == "flux" else None
        local = replace(params.model, path=str(tmp_path / name), resolution=resolution)
        prompt = params.model.prompts[0]
        spec = model_spec(replace(params, model=local))
        model = bind_prompt(load_model(spec), prompt_spec(prompt), local.cfg_scale)
        settings = sampler_settings(replace(params, model=replace(local, steps=2)))
        x = sample(model, 2, batch_generator(0, 0), settings)
        assert x.shape == (2, 3, size, size) and torch.isfinite(x).all()
        assert model.provenance["prompt"] == prompt.prompt
    else:
        _tiny_hub_layout(tmp_path / "model")
        local = replace(params.model, path=str(tmp_path / "model"))
        model = load_diffusion_model(local.path, local.local_files_only)
        x = sample(model, 2, batch_generator(0, 0), SamplerSettings(2, local.eta, local.layer))
        assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    rows = check_weights(replace(params, model=local))
    assert all(r["present"] for r in rows if r["what"].startswith("diffusion model"))


def test_hub_id_is_read_from_the_local_cache_only(tmp_path):
    """A hub id resolves in the Hugging Face cache (offline); an id not there is reported."""
    repo = tmp_path / "hub" / "models--google--ddpm-celebahq-256"
    _tiny_hub_layout(repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    code = (
        "import json\n"
        "from fairsynth.app.weights import model_rows\n"
        "from fairsynth.diffusion.unconditional import load_diffusion_model\n"
        "rows = model_rows('google/ddpm-celebahq-256') + model_rows('someone/not-cached')\n"
        "m = load_diffusion_model('google/ddpm-celebahq-256', local_files_only=True)\n"
        "print(json.dumps({'present': [r['present'] for r in rows], 'size': m.image_size}))\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"present": [True] * 3 + [False] * 3, "size": 16}


def test_weights_check_lists_what_is_missing_and_generation_stops(tmp_path):
    preset = load_params(ROOT / "configs" / "celebahq-gender-race.yaml")
    home = tmp_path / "deepface"
    params = replace(
        preset,
        verify=replace(preset.verify, deepface=replace(preset.verify.deepface, home=str(home))),
        output=replace(preset.output, dir=str(tmp_path / "out")),
    )
    rows = check_weights(params)
    missing = {r["file"] for r in rows if not r["present"]}
    assert {"gender_model_weights.pth", "race_model_single_batch.pth", "adp.json"} <= missing
    assert "haarcascade_frontalface_default.xml" not in missing  # shipped with fairsynth
    from fairsynth.app.stages.generate import stage_generate

    with pytest.raises(MissingFiles) as err:
        stage_generate(params, None, progress=False)
    text = str(err.value)
    assert "gender_model_weights.pth" in text and str(home) in text
    assert not (tmp_path / "out").exists(), "nothing may be written before the check"


def test_cli_weights_check_exit_code(tmp_path, capsys):
    from fairsynth.app.cli import main

    assert (
        main(["weights", "check", "--params", str(ROOT / "configs" / "celebahq-gender.yaml")]) == 1
    )
    out = capsys.readouterr().out
    assert "MISSING" in out and "gender_model_weights.pth" in out


def test_pseudo_labeller_must_not_be_the_verifier():
    with pytest.raises(ConfigError, match="adp.pseudo_labeller"):
        parse_params({"adp": {"pseudo_labeller": "deepface"}, "verify": {"verifier": "deepface"},
                      "attributes": {"gender": ["female", "male"]}})  # fmt: skip


def test_require_weights_passes_on_the_toy_world():
    require_weights(load_params(ROOT / "params.yaml"), adp_made_by_pipeline=True)


def test_weights_check_covers_the_text_to_image_preset(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    rows = check_weights(load_params(ROOT / "configs" / "sd15-professions.yaml"))
    files = {r["file"] for r in rows}
    assert {"text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors",
            "unet/diffusion_pytorch_model.safetensors", "gender_model_weights.pth",
            "race_model_single_batch.pth"} <= files  # fmt: skip
    assert any("hub cache" in r["what"] for r in rows)


def test_generate_stage_with_missing_weights_exits_nonzero_and_names_them(tmp_path, capsys):
    import time

    import yaml

    from fairsynth.app.stages.__main__ import main

    raw = yaml.safe_load((ROOT / "configs" / "celebahq-gender.yaml").read_text())
    raw["verify"]["deepface"]["home"] = str(tmp_path / "home")
    raw["output"]["dir"] = str(tmp_path / "shards")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(raw))
    t0 = time.time()
    assert main(["generate", "--params", str(tmp_path / "p.yaml")]) == 2
    assert time.time() - t0 < 10
    err = capsys.readouterr().err
    assert "gender_model_weights.pth" in err and str(tmp_path / "home") in err
    assert not (tmp_path / "shards").exists()
