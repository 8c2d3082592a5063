"""SDXL, SD3 and Flux backends and any diffusers scheduler, on tiny random components built
locally (as diffusers' own tests do): with guidance off our loop is the pipeline's; with it on,
the edit reaches the network through the hooked layer (a transformer block's image stream)."""

import diffusers
import numpy as np
import pytest
import torch

from fairsynth.core.attributes import AttributeSpace
from fairsynth.diffusion.dummy import (
    build_tiny_flux,
    build_tiny_sd,
    build_tiny_sd3,
    build_tiny_sdxl,
)
from fairsynth.diffusion.hspace import HSpace, layer_path
from fairsynth.diffusion.sampling import SamplerSettings, batch_generator, sample
from fairsynth.diffusion.schedulers import make_scheduler
from fairsynth.diffusion.text2image import PromptedModel, load_text2image
from fairsynth.guidance.adp import ADP, ADPShape, TrainedADP, input_shape
from fairsynth.guidance.guide import DistributionGuidance, GuidanceConfig
from fairsynth.guidance.training import ADPTraining, train_adp
from fairsynth.guidance.trajectories import Trajectories

SPACE = AttributeSpace.from_dict({"gender": ["female", "male"]})
# name: (builder, resolution, CFG scale, negative prompt)
PIPELINES = {
    "sdxl": (build_tiny_sdxl, None, 5.0, "blurry"),
    "sd3": (build_tiny_sd3, None, 5.0, "blurry"),
    "flux": (build_tiny_flux, 16, 3.5, None),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_pipelines")
    for build, *_ in PIPELINES.values():
        build(root)
    build_tiny_sd(root)
    return {name: root / name for name in (*PIPELINES, "sd")}


def _bound(folders, name: str, **kw) -> PromptedModel:
    _, resolution, cfg, negative = PIPELINES[name]
    model = load_text2image(folders[name], resolution=resolution)
    return PromptedModel(model, "a photo of a doctor", negative, cfg_scale=cfg, **kw)


def _reference(folders, name: str, n: int, steps: int, seed: int, scheduler=None):
    """The diffusers pipeline's own images, in [0, 1]."""
    _, resolution, cfg, negative = PIPELINES.get(name, (None, None, 6.0, "blurry"))
    pipe_cls = diffusers.DiffusionPipeline.load_config(folders[name])["_class_name"]
    extra = {"safety_checker": None, "requires_safety_checker": False} if name == "sd" else {}
    pipe = getattr(diffusers, pipe_cls).from_pretrained(folders[name], local_files_only=True,
                                                        **extra)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    if scheduler is not None:
        pipe.scheduler = scheduler
    kw = dict(num_inference_steps=steps, num_images_per_prompt=n, guidance_scale=cfg,
              generator=torch.Generator().manual_seed(seed), output_type="pt")  # fmt: skip
    if resolution:
        kw.update(height=resolution, width=resolution)
    if negative:
        kw["negative_prompt"] = negative
    return pipe("a photo of a doctor", **kw).images


def _h_shape(bound: PromptedModel, settings: SamplerSettings) -> tuple[int, ...]:
    seen = []
    sample(bound, 1, batch_generator(0, 0), SamplerSettings(1, layer=settings.layer),
           callback=lambda info: seen.append(tuple(info.h.shape[1:])))  # fmt: skip
    return seen[0]


def _adp_for(shape: tuple[int, ...]) -> TrainedADP:
    c, s, tokens = input_shape(shape)
    torch.manual_seed(1)
    model = ADP(c, s, {"gender": 2}, ADPShape(width=8, hidden=16, tokens=tokens)).eval()
    return TrainedADP(model, SPACE, {})


@pytest.mark.parametrize("name", list(PIPELINES))
def test_strength_zero_matches_the_diffusers_pipeline(folders, name):
    """Guidance hooked in at strength 0: the pipeline's images (SD's test tolerance, 1e-5), with
    the folder's own scheduler (SDXL's tiny folder: Euler)."""
    bound, settings = _bound(folders, name), SamplerSettings(steps=3, scheduler="model")
    off = DistributionGuidance(_adp_for(_h_shape(bound, settings)), ("gender",),
                               np.array([0.5, 0.5]), GuidanceConfig(strength=0.0, loss="chi2", shift=0.0))  # fmt: skip
    got = sample(bound, 2, torch.Generator().manual_seed(7), settings, guidance=off)
    want = _reference(folders, name, 2, 3, 7)
    assert got.shape == want.shape
    assert torch.allclose((got / 2 + 0.5).clamp(0, 1), want, atol=1e-5)


@pytest.mark.parametrize(
    "name, cls, options",
    [
        ("dpmsolver++-sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
        ("dpmsolver++", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
        ("euler_ancestral", "EulerAncestralDiscreteScheduler", {}),
        ("unipc", "UniPCMultistepScheduler", {}),
        ("ddpm", "DDPMScheduler", {}),
        ("LMSDiscreteScheduler", "LMSDiscreteScheduler", {}),
    ],
)
def test_any_scheduler_matches_the_pipeline_with_that_scheduler(folders, name, cls, options):
    """Stochastic schedulers draw their noise from the batch generator in the scheduler's own
    order (pre-drawn for DPM-Solver's SDE variant), so the images are the pipeline's."""
    model = load_text2image(folders["sd"])
    ours = {k: v for k, v in options.items() if k != "algorithm_type"}
    settings = SamplerSettings(steps=4, eta=0.0, scheduler=name, scheduler_options=ours)
    bound = PromptedModel(model, "a photo of a doctor", "blurry", cfg_scale=6.0)
    got = sample(bound, 2, torch.Generator().manual_seed(7), settings)
    config = model.pipe.scheduler.config
    want = _reference(
        folders, "sd", 2, 4, 7, getattr(diffusers, cls).from_config(config, **options)
    )
    assert torch.allclose((got / 2 + 0.5).clamp(0, 1), want, atol=1e-5)


def test_unconditional_default_scheduler_is_ddim_and_others_run(tiny_model):
    gen = lambda: batch_generator(0, 1)  # noqa: E731
    default = sample(tiny_model, 2, gen(), SamplerSettings(steps=3, eta=1.0))
    ddim = sample(tiny_model, 2, gen(), SamplerSettings(steps=3, eta=1.0, scheduler="ddim"))
    assert torch.equal(default, ddim)
    euler = sample(tiny_model, 2, gen(), SamplerSettings(steps=3, scheduler="euler_ancestral"))
    again = sample(tiny_model, 2, gen(), SamplerSettings(steps=3, scheduler="euler_ancestral"))
    assert torch.equal(euler, again) and not torch.allclose(euler, default)


def test_scheduler_names_and_options_are_checked():
    config = {**diffusers.DDPMScheduler().config, "_class_name": "DDPMScheduler"}
    built = make_scheduler("dpmsolver++", config, {"solver_order": 3, "use_karras_sigmas": True})
    assert type(built).__name__ == "DPMSolverMultistepScheduler"
    assert built.config.solver_order == 3 and built.config.algorithm_type == "dpmsolver++"
    assert type(make_scheduler("model", config)).__name__ == "DDPMScheduler"
    with pytest.raises(ValueError, match="unknown scheduler 'fancy'"):
        make_scheduler("fancy", config)
    with pytest.raises(ValueError, match="takes no option 'solver_ordr'"):
        make_scheduler("dpmsolver++", config, {"solver_ordr": 2})
    with pytest.raises(ValueError, match="does not fit a noise-prediction"):
        make_scheduler("flow_match_euler", config)
    flow = {
        **diffusers.FlowMatchEulerDiscreteScheduler().config,
        "_class_name": "FlowMatchEulerDiscreteScheduler",
    }
    with pytest.raises(ValueError, match="does not fit a flow-matching model"):
        make_scheduler("ddim", flow, flow_matching=True)
    assert type(make_scheduler(None, flow, flow_matching=True)).__name__.startswith("FlowMatch")


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_transformer_h_is_the_image_stream_of_the_middle_block(folders, name):
    bound = _bound(folders, name)
    net = bound.unet
    assert layer_path(net, "mid_block") == f"transformer_blocks.{len(net.transformer_blocks) // 2}"
    side = bound.image_size // bound.model.pipe.vae_scale_factor // (2 if name == "flux" else 1)
    with HSpace(net, "mid_block") as hook:
        sample(bound, 2, batch_generator(0, 0), SamplerSettings(steps=1))
    rows = 4 if name == "sd3" else 2  # SD3: the CFG batch; Flux: guidance-distilled, none
    assert tuple(hook.captured.shape) == (rows, side * side, net.inner_dim)
    assert _h_shape(bound, SamplerSettings(1)) == (side * side, net.inner_dim)  # cond half


def _planted_adp(bound: PromptedModel, settings: SamplerSettings) -> TrainedADP:
    """An ADP trained on the network's own h (recorded unguided) with an attribute planted
    along a random direction v: class y's tokens shifted by (2y - 1) * v (|v| = h's token
    std), so the ADP learns to read v."""
    hs, ts = [], []

    def record(info) -> None:
        hs.append(info.h.float())
        ts.append(float(info.timestep))

    sample(bound, 256, batch_generator(5, 0), settings, callback=record)
    h = torch.stack(hs, 1)  # (n, steps, tokens, dim)
    g = torch.Generator().manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(h.shape[-1], generator=g), dim=0)
    y = torch.arange(len(h)) % 2
    h = h + (2.0 * y - 1)[:, None, None, None] * v * h.std() * 2**0.5
    traj = Trajectories(h.half(), torch.tensor(ts), {"gender": y.numpy()},
                        np.zeros((len(y), 1, 1, 3), np.uint8))  # fmt: skip
    return train_adp(traj, SPACE, ADPTraining(epochs=10, width=8, hidden=32, lr=3e-3))


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_guidance_moves_the_batch_prediction_toward_the_target(folders, name):
    """On a tiny random transformer, guiding the planted attribute toward [0.9, 0.1] moves the
    ADP's batch prediction (on h after the edit) there; without the edit it stays put."""
    bound, settings = _bound(folders, name), SamplerSettings(steps=4)
    adp = _planted_adp(bound, settings)

    def batch_prediction(guidance) -> float:
        probs = []

        def seen(info):
            t = torch.as_tensor(info.timestep)
            probs.append(adp.joint_probs(info.h.float(), t, ("gender",))[:, 0].mean().item())

        sample(bound, 16, batch_generator(0, 0), settings, callback=seen, guidance=guidance)
        return float(np.mean(probs))

    target = np.array([0.9, 0.1])
    plain = batch_prediction(None)
    off = batch_prediction(
        DistributionGuidance(
            adp, ("gender",), target, GuidanceConfig(strength=0.0, loss="chi2", shift=0.0)
        )
    )
    on = batch_prediction(
        DistributionGuidance(
            adp,
            ("gender",),
            target,
            GuidanceConfig(strength=20.0, max_step=0.5, loss="chi2", shift=0.0),
        )
    )
    assert off == pytest.approx(plain, abs=1e-6)
    assert abs(on - 0.9) < abs(plain - 0.9) - 0.15, (plain, on)


def test_flux_refuses_a_negative_prompt(folders):
    model = load_text2image(folders["flux"], resolution=16)
    with pytest.raises(ValueError, match="guidance-distilled"):
        PromptedModel(model, "a face", "blurry")


def test_resolution_must_fit_the_latent_grid(folders):
    with pytest.raises(ValueError, match="model.resolution: 15"):
        load_text2image(folders["flux"], resolution=15)


@pytest.mark.parametrize(
    "name, pipeline, lost",
    [
        ("sdxl", "StableDiffusionXLPipeline", "text_encoder_2/model.safetensors"),
        ("sd3", "StableDiffusion3Pipeline", "text_encoder_3/model.safetensors"),
        ("flux", "FluxPipeline", "transformer/diffusion_pytorch_model.safetensors"),
    ],
)
def test_weights_check_lists_each_layout_and_names_bad_files(
    folders, tmp_path, name, pipeline, lost
):
    import shutil

    from fairsynth.app.weights import model_rows

    rows = model_rows(str(folders[name]), "text2image")
    assert all(r["present"] for r in rows) and pipeline in rows[0]["what"]
    assert lost in {r["file"] for r in rows}
    copy = tmp_path / name
    shutil.copytree(folders[name], copy)
    (copy / lost).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=f"{lost}: not a safetensors file"):
        load_text2image(copy)
    (copy / lost).unlink()
    assert [r["file"] for r in model_rows(str(copy), "text2image") if not r["present"]] == [lost]
    with pytest.raises(FileNotFoundError, match=f"is missing {lost}"):
        load_text2image(copy)


def test_scheduler_settings_are_checked_in_the_params():
    from fairsynth.app.config import ConfigError, parse_params
    from fairsynth.app.resolve import sampler_settings

    params = parse_params({"model": {"scheduler": "dpmsolver++-sde",
                                     "scheduler_options": {"solver_order": 2}}})  # fmt: skip
    settings = sampler_settings(params)
    assert settings.scheduler == "dpmsolver++-sde"
    assert settings.scheduler_options == (("solver_order", 2),)
    with pytest.raises(ConfigError, match="model.scheduler: unknown scheduler 'dpm'"):
        parse_params({"model": {"scheduler": "dpm"}})
    with pytest.raises(ConfigError, match="model.scheduler_options: .*no option 'order'"):
        parse_params({"model": {"scheduler": "unipc", "scheduler_options": {"order": 2}}})
    with pytest.raises(ConfigError, match="model.resolution: only for kind: text2image"):
        parse_params({"model": {"resolution": 64}})


def test_unset_scheduler_keys_leave_the_guidance_hash_as_it_was():
    """Runs made before these keys existed resume: unset, they are not in the hash."""
    from fairsynth.app.config import parse_params
    from fairsynth.app.runspec import guidance_hash

    assert guidance_hash(parse_params({})) == guidance_hash(parse_params({"model": {}}))
    ddim = guidance_hash(parse_params({"model": {"scheduler": "ddim"}}))
    assert guidance_hash(parse_params({})) != ddim  # named, it is recorded


def test_guidance_protect_off_keeps_the_guidance_hash_runs_had_before_it():
    from fairsynth.app.config import parse_params
    from fairsynth.app.runspec import guidance_hash

    before = {"loss": "chi2", "strength": 1.0, "shift": 0}  # the defaults before the key came
    assert guidance_hash(parse_params({"guidance": before})) == "347be0d034ba"
    protected = parse_params({"guidance": {**before, "protect": True}})
    assert guidance_hash(protected) != "347be0d034ba"
    assert protected.guidance.to_config().protect


def test_a_truncated_safetensors_file_is_named(tmp_path):
    from safetensors.torch import save_file

    from fairsynth.diffusion.safetensors_check import check_safetensors

    f = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(64)}, str(f))
    check_safetensors(f)
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(ValueError, match="w.safetensors: truncated .*'w'"):
        check_safetensors(f)
