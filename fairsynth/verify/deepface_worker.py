"""The deepface worker process: ``python -m fairsynth.verify.deepface_worker`` (started by
``DeepfaceVerifier``; speaks the ``fairsynth.verify.worker`` protocol).

Per batch: detect faces with the configured backend exactly as ``DeepFace.analyze`` does
(``extract_faces`` -> BGR -> ``resize_image`` to 224x224), reject images with no face or with
several, then run each needed attribute model once on the whole batch of crops. Replies with
the raw deepface probabilities (gender 2, race 6, age 101 columns) and the rejections.
"""

from __future__ import annotations

import os

import numpy as np

from fairsynth.verify.deepface import AGE_CLASSES, GENDER_LABELS, MODEL_NAMES, RACE_LABELS
from fairsynth.verify.verdict import NO_FACE, SEVERAL_FACES
from fairsynth.verify.worker import serve

WIDTH = {"gender": len(GENDER_LABELS), "race": len(RACE_LABELS), "age": AGE_CLASSES}


def _forbid_downloads() -> None:
    """deepface downloads a missing file on first use; a run here must never do that."""
    from deepface.commons import weight_utils

    original = weight_utils.download_weights_if_necessary

    def offline(file_name, source_url, compress_type=None):
        home = weight_utils.folder_utils.get_deepface_home()
        target = os.path.join(home, ".deepface", "weights", file_name)
        if os.path.isfile(target):
            return original(file_name, source_url, compress_type)
        raise FileNotFoundError(
            f"deepface wants to download {file_name} to {target}; downloads are off "
            "(verify.deepface.allow_download: false)"
        )

    weight_utils.download_weights_if_necessary = offline


def crops(images: np.ndarray, detector: str) -> tuple[list[np.ndarray | None], list[str | None]]:
    """One 224x224 crop per image (or None with the reason), as ``DeepFace.analyze`` makes it."""
    from deepface.modules import detection, preprocessing

    out, rejects = [], []
    for img in images:
        faces = detection.extract_faces(
            img_path=np.ascontiguousarray(img[:, :, ::-1]),  # deepface takes BGR arrays
            detector_backend=detector,
            enforce_detection=False,
            grayscale=False,
            align=True,
            expand_percentage=0,
        )
        if detector != "skip":
            # with enforce_detection off, "no face" comes back as the whole image, confidence 0
            faces = [f for f in faces if f.get("confidence", 0) > 0]
        faces = [f for f in faces if f["face"].shape[0] > 0 and f["face"].shape[1] > 0]
        if not faces:
            out.append(None)
            rejects.append(NO_FACE)
        elif len(faces) > 1:
            out.append(None)
            rejects.append(SEVERAL_FACES)
        else:
            face = faces[0]["face"][:, :, ::-1]  # RGB -> BGR, as analyze does
            out.append(preprocessing.resize_image(img=face, target_size=(224, 224))[0])
            rejects.append(None)
    return out, rejects


def make_handler(config: dict):
    os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")
    if not config.get("allow_download", False):
        _forbid_downloads()
    from deepface.modules import modeling

    detector = config.get("detector", "skip")
    sources = list(config["sources"])
    models = {
        s: modeling.build_model(task="facial_attribute", model_name=MODEL_NAMES[s]) for s in sources
    }

    def predict(source: str, batch: np.ndarray) -> np.ndarray:
        model = models[source]
        # Age.predict returns the apparent age; the per-age probabilities are what we bin
        p = model._predict_internal(batch) if source == "age" else model.predict(batch)
        p = np.asarray(p, dtype=np.float64).reshape(len(batch), WIDTH[source])
        return p / np.clip(p.sum(1, keepdims=True), 1e-12, None)

    def handle(header: dict, images: np.ndarray | None):
        assert images is not None
        faces, rejects = crops(images, detector)
        ok = [i for i, f in enumerate(faces) if f is not None]
        offsets, col = {}, 0
        for s in sources:
            offsets[s] = [col, col + WIDTH[s]]
            col += WIDTH[s]
        raw = np.zeros((len(images), col))
        for s in sources:
            lo, hi = offsets[s]
            raw[:, lo:hi] = 1.0 / WIDTH[s]  # rejected samples: uniform, never a guess
            if ok:
                raw[ok, lo:hi] = predict(s, np.stack([faces[i] for i in ok]))
        return {"rejects": rejects, "offsets": offsets}, raw

    return handle


if __name__ == "__main__":
    serve(make_handler)
