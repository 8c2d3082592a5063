"""Record h_t trajectories of the base model, pseudo-label them, train and save the ADP."""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from fairsynth.app.config import Params, PromptConfig, as_dict
from fairsynth.app.config.base import hashed
from fairsynth.app.config.model_section import LATER_MODEL_KEYS
from fairsynth.app.preflight import check_images, check_prompts
from fairsynth.app.pseudo_labels import PseudoLabeller, check_labels
from fairsynth.app.resolve import model_spec, prompt_spec, sampler_settings, verifier_spec
from fairsynth.core.attributes import AttributeSpace
from fairsynth.core.filehash import code_signature, files_signature, local_model_path
from fairsynth.core.plugins import is_artefact, resolve
from fairsynth.diffusion.backends import bind_prompt, load_model
from fairsynth.diffusion.device import resolve_device
from fairsynth.guidance.adp import TrainedADP
from fairsynth.guidance.class_means import cell_means
from fairsynth.guidance.training import ADPTraining, train_adp
from fairsynth.guidance.trajectories import Recording, Trajectories, stream_trajectories
from fairsynth.guidance.trajectory_store import TrajectoryWriter, is_store
from fairsynth.verify.kinds import verifier_folder


def adp_out(params: Params) -> Path:
    """Where train-adp writes: ``adp.path``, which generation then reads (not a shipped ADP)."""
    if is_artefact("adp", params.adp.path):
        raise ValueError(
            f"adp.path: {params.adp.path!r} is a shipped ADP, not a folder to train into; set "
            "adp.path to the folder the trained ADP should go to (generation reads it there)"
        )
    return Path(params.adp.path)


def train_adp_from_params(
    params: Params,
    out: str | Path,
    progress: bool = False,
    *,
    calibrate: bool = False,
    trajectories_file: str | Path | None = None,
    means_only: bool = False,
) -> TrainedADP:
    """Record trajectories of the base model, pseudo-label them, train the ADP and save it in
    ``out``. ``trajectories_file``: reuse a recording saved there, or save this one there
    (retraining with other ADP settings then skips the sampling). ``means_only``: keep the ADP
    in ``out`` (weights, calibration) and only add the class means of the recording
    (guidance.shift). ``calibrate``: also sweep guidance strengths, filed with the ADP."""
    if means_only:
        existing = TrainedADP.load(out).check_layer(params.model.layer)  # fails before sampling
        to_adp = class_maps(params.attribute_space(), existing.space)
    check_images(params, ("pseudo_labeller", "verifier") if calibrate else ("pseudo_labeller",))
    check_prompts(params)
    spec = model_spec(params)
    device = resolve_device(spec.device)  # "auto" stays in a spec for a remote cluster
    model = load_model(spec)
    label = PseudoLabeller(params, device)
    traj, scratch = _recording(params, model, label, out, trajectories_file, progress)
    try:
        check_labels(params, label if label.seen else None, traj)
        if means_only:
            labels = {n: m[np.asarray(traj.labels[n])] for n, m in to_adp.items()}
            existing.means = cell_means(traj.h, labels, existing.space.attributes, traj.timesteps)
            existing.meta["class_means_trajectories"] = len(traj.h)
            existing.save(out)
            return existing
        a = params.adp
        training = ADPTraining(seed=a.seed, epochs=a.epochs, lr=a.lr, dropout=a.dropout,
                               weight_decay=a.weight_decay)  # fmt: skip
        trained = train_adp(traj, params.attribute_space(), training, progress)
        trained.meta.update(_made_by(params))
        if calibrate:
            _calibrate(params, model, trained, device, progress)
        trained.meta["inputs_fingerprint"] = adp_inputs_hash(params)  # checked on reuse
        trained.save(out)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return trained


def _recording(params: Params, model, label, out, trajectories_file, progress: bool):
    """The trajectories to train on: reused from ``trajectories_file``, or recorded (streamed
    to disk batch by batch: memory does not grow with adp.trajectories) into it or into a
    scratch folder beside ``out``. Returns them and the scratch folder to remove (or None)."""
    if trajectories_file is not None and (
        Path(trajectories_file).is_file() or is_store(trajectories_file)
    ):
        traj = (
            Trajectories.open(trajectories_file)
            if is_store(trajectories_file)
            else Trajectories.load(trajectories_file)  # a single-file recording
        )
        a = params.adp  # (the pseudo-labeller's rejections are not kept)
        if not (1 - a.max_rejected) * a.trajectories <= len(traj.h) <= a.trajectories:
            raise ValueError(
                f"{trajectories_file} holds {len(traj.h)} trajectories, adp.trajectories is "
                f"{a.trajectories}; delete it to record again"
            )
        return traj, None
    scratch = None
    if trajectories_file is None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{Path(out).name}-trajectories-"
        for stale in Path(out).parent.glob(prefix + "*"):  # a killed run's (out is locked)
            shutil.rmtree(stale, ignore_errors=True)
        scratch = tempfile.mkdtemp(prefix=prefix, dir=Path(out).parent)
    writer = TrajectoryWriter(trajectories_file or scratch)
    try:
        _record(params, model, label, writer, progress)
        writer.finish()
    except BaseException:
        writer.close()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        raise
    return Trajectories.open(writer.folder), scratch


def _record(params: Params, model, label, writer: TrajectoryWriter, progress: bool) -> None:
    record = Recording(
        settings=sampler_settings(params),  # the trajectories generation will follow
        record_every=params.adp.record_every,
        batch_size=params.guidance.batch_size,
        progress=progress,
    )
    seed = params.adp.seed + 10_000  # disjoint from generation seeds
    n, prompts = params.adp.trajectories, training_prompts(params)
    if not prompts:
        stream_trajectories(writer, model, label, n, seed, record)
        return
    # one ADP shared by all prompts: the attributes' h-space directions are shared across
    # prompts, and neutral prompts widen the distribution the ADP sees
    share = np.array_split(np.arange(n), len(prompts))
    for k, prompt in enumerate(prompts):
        bound = bind_prompt(model, prompt_spec(prompt), params.model.cfg_scale)
        stream_trajectories(writer, bound, label, len(share[k]), seed + 1_000 * k, record)


def _made_by(params: Params) -> dict:
    """What the ADP records of the model and recording it was trained on."""
    m, prompts = params.model, training_prompts(params)
    return {
        "base_model": str(m.path),
        "layer": m.layer,
        "steps": m.steps,
        "pseudo_labeller": str(params.adp.pseudo_labeller),
        "eta": m.eta,
        **({"scheduler": m.scheduler} if m.scheduler else {}),
        **({"cfg_scale": m.cfg_scale, "prompts": [p.prompt for p in prompts]} if prompts else {}),
    }


def _calibrate(params: Params, model, trained: TrainedADP, device: str, progress: bool) -> None:
    """Sweep strengths for distribution and sample guidance, guided as generation guides;
    text-to-image: on the first prompt, at the configured CFG scale. Filed in ``trained``."""
    from fairsynth.app.calibrate import calibrate_strength, calibration_sweep
    from fairsynth.guidance.guided import GuidedSampler
    from fairsynth.verify import load_verifier

    verifier = load_verifier(verifier_spec(params), params.attribute_space(), device)
    prompts = training_prompts(params)
    first = prompt_spec(prompts[0]) if prompts else None
    calib_model = bind_prompt(model, first, params.model.cfg_scale)
    trained.to(device)
    recommended = {}
    try:
        for mode in ("distribution", "sample"):
            sweep = calibration_sweep(params, mode)
            sampler = GuidedSampler(calib_model, sweep.settings, sweep.guidance, trained)
            result = calibrate_strength(sampler, verifier, sweep, progress)
            recommended[f"{mode}_strength"] = result["chosen"]
            trained.meta.setdefault("calibration", {})[mode] = result
    finally:
        verifier.close()
    trained.meta["recommended"] = recommended
    trained.to("cpu")


def adp_fingerprint(params: Params) -> dict:
    """Everything the trained ADP depends on, files by content: the base model and the
    pseudo-labeller, the ``adp`` section, the attributes, how trajectories are recorded (layer,
    steps, eta, batch size, prompts and CFG scale) and the library code. Not the target, the
    quotas or the output settings: the same ADP serves any of them."""
    m = params.model
    prompts = [[p.prompt, p.negative_prompt] for p in training_prompts(params)]
    labeller = params.adp.pseudo_labeller
    labeller_folder = verifier_folder(resolve("pseudo_labeller", labeller))
    return {
        "model_files": files_signature(local_model_path(resolve("model", m.path))),
        "pseudo_labeller_files": labeller
        if labeller_folder is None
        else files_signature(labeller_folder),
        "adp": {k: v for k, v in hashed("adp", as_dict(params.adp)).items() if k != "path"},
        "attributes": params.attribute_space().as_dict(),
        "recording": {
            "kind": m.kind,
            "layer": m.layer,
            "steps": m.steps,
            "eta": m.eta,
            "batch_size": params.guidance.batch_size,
            "cfg_scale": m.cfg_scale if prompts else None,
            "prompts": prompts,
            # float32 recordings keep the fingerprint they had before dtype was a setting
            **({"dtype": m.dtype} if m.dtype != "float32" else {}),
            **{k: getattr(m, k) for k in LATER_MODEL_KEYS if getattr(m, k) is not None},
        },  # fmt: skip
        "code": code_signature(),
    }


def adp_inputs_hash(params: Params) -> str:
    """``adp_fingerprint`` as one sha256 (recorded in ``adp.json`` as ``inputs_fingerprint``)."""
    import hashlib
    import json

    blob = json.dumps(adp_fingerprint(params), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def recorded_inputs(folder: str | Path) -> str | None:
    """The ``inputs_fingerprint`` an ADP folder records, or None (no ADP, or none recorded)."""
    import json

    try:
        return json.loads((Path(folder) / "adp.json").read_text()).get("inputs_fingerprint")
    except (OSError, ValueError):
        return None


def adp_is_current(params: Params, folder: str | Path) -> bool:
    """True when ``folder`` holds a complete ADP trained from the inputs these params name."""
    from fairsynth.guidance.adp import ADP_FILES

    present = all((Path(folder) / f).is_file() for f in ADP_FILES)
    return present and recorded_inputs(folder) == adp_inputs_hash(params)


def training_prompts(params: Params) -> list[PromptConfig]:
    """Text-to-image: the configured prompts plus the neutral ones; [] for unconditional."""
    if params.model.kind != "text2image":
        return []
    neutral = [PromptConfig(prompt=p) for p in params.adp.neutral_prompts or []]
    return [*(params.model.prompts or []), *neutral]


def class_maps(space: AttributeSpace, adp_space: AttributeSpace) -> dict[str, np.ndarray]:
    """Per attribute of ``adp_space`` (the ADP's, whose cells its means follow), the class
    index there of each class index of ``space`` (the params')."""
    order = space.order_from(adp_space.as_dict(), "ADP")
    missing = [n for n in adp_space.names if n not in order]
    if missing:
        raise ValueError(
            f"the ADP's attribute(s) {missing} are not among the params' attributes: "
            "--means-only needs the attributes the ADP was trained on"
        )
    return {n: np.array(order[n]) for n in adp_space.names}


def train_adp_command(a: argparse.Namespace) -> int:
    from fairsynth.app.config import load_params

    params = load_params(a.params)
    out = adp_out(params) if a.out is None else a.out
    trained = train_adp_from_params(
        params, out, progress=True, calibrate=a.calibrate,
        trajectories_file=a.trajectories, means_only=a.means_only,
    )  # fmt: skip
    print(json.dumps({"out": str(out), **trained.meta}, indent=2))
    return 0
