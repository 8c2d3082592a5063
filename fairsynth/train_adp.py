"""Record h_t trajectories of the base model, pseudo-label them, train and save the ADP."""

from __future__ import annotations

from pathlib import Path

from fairsynth.adp import TrainedADP, record_trajectories, train_adp
from fairsynth.config import Params
from fairsynth.diffusion_model import load_diffusion_model
from fairsynth.toyfaces import resolve
from fairsynth.toyfaces.classifiers import AttributeClassifier
from fairsynth.verify import ClassifierVerifier


def train_adp_from_params(
    params: Params,
    out: str | Path,
    pseudo_labeller: str | None = None,
    progress: bool = False,
    calibrate: bool = False,
) -> TrainedADP:
    model = load_diffusion_model(resolve("model", params.model.path), params.model.local_files_only)
    pseudo_labeller = pseudo_labeller or params.adp.pseudo_labeller
    if pseudo_labeller == "deepface":
        from fairsynth.verify.deepface import DeepfaceVerifier

        labeller = DeepfaceVerifier(params.verify.deepface)
    else:
        labeller = ClassifierVerifier(
            AttributeClassifier.load(resolve("pseudo_labeller", pseudo_labeller))
        )
    space = params.attribute_space()
    missing = [n for n in space.names if n not in labeller.attributes]
    if missing:
        raise ValueError(f"the pseudo-labeller does not label attribute(s) {missing}")

    def label(images):
        return labeller.verify(images).probs

    traj = record_trajectories(
        model,
        label,
        n=params.adp.trajectories,
        seed=params.adp.seed + 10_000,  # disjoint from generation seeds
        steps=params.model.steps,
        eta=params.model.eta,  # the trajectories generation will follow
        record_every=params.adp.record_every,
        batch_size=params.guidance.batch_size,
        layer=params.model.layer,
        progress=progress,
    )
    trained = train_adp(
        traj, space, seed=params.adp.seed, epochs=params.adp.epochs, progress=progress
    )
    trained.meta.update(
        {
            "base_model": str(params.model.path),
            "layer": params.model.layer,
            "steps": params.model.steps,
            "pseudo_labeller": str(pseudo_labeller),
        }
    )
    if calibrate:
        from fairsynth.calibrate import calibrate_strength, geometric

        verifier = AttributeClassifier.load(resolve("verifier", params.verify.verifier))
        recommended = {}
        for mode in ("distribution", "sample"):
            result = calibrate_strength(
                model, trained, verifier, mode, geometric(1.0, 1000.0, 4),
                batch_size=params.guidance.batch_size, steps=params.model.steps,
                loss=params.guidance.loss, progress=progress,
            )  # fmt: skip
            recommended[f"{mode}_strength"] = result["chosen"]
            trained.meta.setdefault("calibration", {})[mode] = result
        trained.meta["recommended"] = recommended
    trained.save(out)
    return trained
