"""deepface's labels, how they map onto our attributes' classes (``verify.deepface.attributes``),
and the weight files deepface needs: what the params check without loading a verifier."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

GENDER_LABELS = ("Woman", "Man")
RACE_LABELS = ("asian", "indian", "black", "white", "middle eastern", "latino hispanic")
AGE_CLASSES = 101
SOURCES = ("gender", "race", "age")
MODEL_NAMES = {"gender": "Gender", "race": "Race", "age": "Age"}
WEIGHT_FILES = {
    "gender": "gender_model_weights.pth",
    "race": "race_model_single_batch.pth",
    "age": "age_model_weights.pth",
}
DETECTOR_FILES = {"opencv": ("haarcascade_frontalface_default.xml", "haarcascade_eye.xml")}
OFFLINE_DETECTORS = ("skip", "opencv")
SHIPPED_CASCADES = Path(__file__).parent / "opencv"  # opencv 5 wheels no longer ship them

DEFAULT_ATTRIBUTES = {
    "gender": {"source": "gender", "classes": {"female": ["Woman"], "male": ["Man"]}},
    "race": {
        "source": "race",
        "classes": {lab.replace(" ", "_"): [lab] for lab in RACE_LABELS},
    },
}


@dataclass(frozen=True)
class AttributeMap:
    """One of our attributes computed from one deepface output."""

    name: str
    source: str
    classes: tuple[str, ...]
    matrix: np.ndarray  # (n_source_classes, n_classes) 0/1: sums source probs into our classes

    def apply(self, source_probs: np.ndarray) -> np.ndarray:
        p = np.asarray(source_probs, dtype=np.float64) @ self.matrix
        return p / np.clip(p.sum(1, keepdims=True), 1e-12, None)


def attribute_maps(attributes: dict | None, key: str = "verify.deepface.attributes"):
    """Validated maps (``ValueError`` naming the key on a bad table)."""
    attributes = attributes if attributes is not None else DEFAULT_ATTRIBUTES
    if not isinstance(attributes, dict) or not attributes:
        raise ValueError(f"{key}: expected a mapping of attribute -> {{source, classes}}")
    maps = {}
    for name, spec in attributes.items():
        k = f"{key}.{name}"
        if not isinstance(spec, dict) or set(spec) != {"source", "classes"}:
            raise ValueError(f"{k}: expected exactly the keys 'source' and 'classes'")
        source, classes = spec["source"], spec["classes"]
        if source not in SOURCES:
            raise ValueError(f"{k}.source: must be one of {SOURCES}, got {source!r}")
        if not isinstance(classes, dict) or len(classes) < 2:
            raise ValueError(f"{k}.classes: expected a mapping of at least two classes")
        names = tuple(str(c) for c in classes)
        if source == "age":
            matrix = _age_matrix(classes, f"{k}.classes")
        else:
            labels = GENDER_LABELS if source == "gender" else RACE_LABELS
            matrix = np.zeros((len(labels), len(names)))
            for j, (cls, members) in enumerate(classes.items()):
                if isinstance(members, str):
                    members = [members]
                for m in members:
                    if m not in labels:
                        raise ValueError(
                            f"{k}.classes.{cls}: {m!r} is not a deepface {source} label {labels}"
                        )
                    matrix[labels.index(m), j] += 1
            bad = [lab for lab, row in zip(labels, matrix, strict=True) if row.sum() != 1]
            if bad:
                raise ValueError(
                    f"{k}.classes: every deepface {source} label must belong to exactly one "
                    f"class; check {bad}"
                )
        maps[name] = AttributeMap(name, source, names, matrix)
    return maps


def _age_matrix(classes: dict, key: str) -> np.ndarray:
    bins = []
    for cls, edges in classes.items():
        if not (isinstance(edges, list | tuple) and len(edges) == 2):
            raise ValueError(f"{key}.{cls}: expected [from, to) ages, got {edges!r}")
        lo, hi = int(edges[0]), int(edges[1])
        if not 0 <= lo < hi:
            raise ValueError(f"{key}.{cls}: need 0 <= from < to, got {edges!r}")
        bins.append((lo, min(hi, AGE_CLASSES)))
    order = sorted(range(len(bins)), key=lambda j: bins[j][0])
    edge = 0
    for j in order:
        if bins[j][0] != edge:
            raise ValueError(f"{key}: age bins must tile 0..100 without gaps or overlaps")
        edge = bins[j][1]
    if edge != AGE_CLASSES:
        raise ValueError(f"{key}: age bins must reach 101 (the last bin covers ages up to 100)")
    matrix = np.zeros((AGE_CLASSES, len(bins)))
    for j, (lo, hi) in enumerate(bins):
        matrix[lo:hi, j] = 1
    return matrix


def deepface_home(home: str | None) -> Path:
    """Where deepface keeps ``.deepface/weights``: the setting, else ``$DEEPFACE_HOME``, else ~."""
    return Path(home or os.environ.get("DEEPFACE_HOME") or Path.home()).expanduser()


def required_files(config) -> list[dict]:
    """The files the configured deepface verifier needs, where they go, whether present."""
    weights = deepface_home(config.home) / ".deepface" / "weights"
    sources = sorted({m.source for m in attribute_maps(config.attributes).values()})
    rows = [
        {"what": f"deepface {s} model", "file": WEIGHT_FILES[s], "path": str(weights / WEIGHT_FILES[s])}
        for s in sources
    ]  # fmt: skip
    for f in DETECTOR_FILES.get(config.detector, ()):
        where = [weights / f, SHIPPED_CASCADES / f]
        try:
            import cv2

            where.insert(0, Path(cv2.__file__).parent / "data" / f)
        except ImportError:
            pass
        found = next((p for p in where if p.is_file()), where[-1])
        rows.append({"what": f"opencv detector ({f})", "file": f, "path": str(found)})
    for r in rows:
        r["present"] = Path(r["path"]).is_file()
    return rows
