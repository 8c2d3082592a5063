"""deepface as a verifier: gender, race and age mapped onto the configured classes.

deepface runs in its own worker process (``fairsynth.verify.deepface_worker``) through the
protocol of ``fairsynth.verify.worker``; this module holds the client and the pure mapping
from deepface's outputs to our classes, and never imports deepface itself.

Mapping (``verify.deepface.attributes``), for each of our attributes:
- ``source: gender`` or ``race``: ``classes`` maps each of our classes to a list of deepface
  labels; together they must cover every deepface label exactly once (a partition), so merged
  groups keep probabilities that sum to 1 (e.g. ``other: [middle eastern, latino hispanic]``).
- ``source: age``: ``classes`` maps each class to ``[from, to)`` ages; the bins must tile
  0..101 (deepface's age model gives a probability for each age 0..100).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fairsynth.verify.deepface_config import (  # noqa: F401  (re-exported)
    AGE_CLASSES,
    DEFAULT_ATTRIBUTES,
    DETECTOR_FILES,
    GENDER_LABELS,
    MODEL_NAMES,
    OFFLINE_DETECTORS,
    RACE_LABELS,
    SHIPPED_CASCADES,
    SOURCES,
    WEIGHT_FILES,
    AttributeMap,
    attribute_maps,
    deepface_home,
    required_files,
)
from fairsynth.verify.verdict import Verdict


def _install_cascades(weights: Path) -> None:
    """deepface looks for the cascades in cv2's data folder, then in its weights folder (and
    downloads them when absent there): put the shipped copies where it looks second."""
    import shutil

    for f in DETECTOR_FILES["opencv"]:
        if not (weights / f).is_file():
            weights.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHIPPED_CASCADES / f, weights / f)


class MissingWeights(FileNotFoundError):
    def __init__(self, missing: list[dict]):
        lines = "\n".join(f"  - {r['what']}: {r['path']}" for r in missing)
        super().__init__(
            "missing weights (nothing is downloaded unless verify.deepface.allow_download is "
            f"true):\n{lines}\nPut the files there, or set DEEPFACE_HOME / verify.deepface.home."
        )
        self.missing = missing


def worker_gpu_env(device: str, environ: dict[str, str]) -> dict[str, str]:
    """The deepface worker's CUDA_VISIBLE_DEVICES for a producer on ``device``: deepface's
    torch models take ``cuda:0`` when CUDA is there, so the worker sees the producer's GPU
    first (``cuda:k`` -> the k-th visible device); nothing to set for ``cuda`` or a CPU."""
    if not device.startswith("cuda:"):
        return {}
    index = int(device.split(":")[1])
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else [str(i) for i in range(index + 1)]
    return {"CUDA_VISIBLE_DEVICES": ids[index] if index < len(ids) else str(index)}


class DeepfaceVerifier:
    """Verifier protocol over a deepface worker process (on the producer's GPU when there is
    one: deepface's torch backend)."""

    def __init__(self, config, device: str = "cpu"):
        self.config = config
        self.maps = attribute_maps(config.attributes)
        self.attributes = {name: m.classes for name, m in self.maps.items()}
        if config.detector not in OFFLINE_DETECTORS and not config.allow_download:
            raise ValueError(
                f"verify.deepface.detector {config.detector!r} is not checked for offline use; "
                f"use one of {OFFLINE_DETECTORS} or set allow_download: true"
            )
        missing = [r for r in required_files(config) if not r["present"]]
        if missing and not config.allow_download:
            raise MissingWeights(missing)
        if config.detector == "opencv":
            _install_cascades(deepface_home(config.home) / ".deepface" / "weights")
        from fairsynth.verify.worker import WorkerClient

        home = deepface_home(config.home)
        self.client = WorkerClient(
            "fairsynth.verify.deepface_worker",
            {
                "detector": config.detector,
                "sources": sorted({m.source for m in self.maps.values()}),
                "allow_download": config.allow_download,
            },
            retries=config.retries,
            env={
                "DEEPFACE_HOME": str(home),
                "DEEPFACE_BACKEND_ENGINE": "pytorch",
                **worker_gpu_env(device, dict(os.environ)),
            },  # fmt: skip
        )

    def verify(self, images) -> Verdict:
        from fairsynth.verify.verdict import screen_images, uniform_probs

        good, bad = screen_images(images)
        keep = [i for i, g in enumerate(good) if g is not None]
        probs = uniform_probs(self.attributes, len(good))
        if keep:
            # sizes may differ (deepface resizes each face): one call per size
            for shape in sorted({good[i].shape for i in keep}):
                idx = [i for i in keep if good[i].shape == shape]
                inner = self._verify_batch(np.stack([good[i] for i in idx]))
                for k in probs:
                    probs[k][idx] = inner.probs[k]
                for j, i in enumerate(idx):
                    bad[i] = inner.rejects[j]
        return Verdict(probs, bad)

    def _verify_batch(self, images: np.ndarray) -> Verdict:
        probs = {name: [] for name in self.maps}
        rejects: list[str | None] = []
        for s in range(0, len(images), self.config.batch_size):
            reply, raw = self.client.call({}, images[s : s + self.config.batch_size])
            rejects.extend(reply["rejects"])
            assert raw is not None
            offsets = reply["offsets"]  # source -> [start, stop) columns of raw
            for name, m in self.maps.items():
                lo, hi = offsets[m.source]
                probs[name].append(m.apply(raw[:, lo:hi]))
        return Verdict({k: np.concatenate(v) for k, v in probs.items()}, rejects)

    @property
    def crashes(self) -> list[str]:
        return self.client.crashes

    def close(self) -> None:
        self.client.close()


def load_deepface(value, settings, device: str = "cpu") -> DeepfaceVerifier:
    """deepface with its ``verify.deepface`` settings (the deepface kind's loader)."""
    return DeepfaceVerifier(settings, device)
