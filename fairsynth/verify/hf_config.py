"""What a Hugging Face image-classification folder is, which labels it has, and whether a label
table (``verify.hf_labels``) fits it: read from its ``config.json``, nothing loaded."""

from __future__ import annotations

import json
from pathlib import Path

FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def is_hf_folder(value) -> bool:
    """A folder whose ``config.json`` describes an image classifier with labels."""
    config = Path(str(value)) / "config.json"
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False
    archs = data.get("architectures") or []
    return (
        isinstance(data, dict)
        and "id2label" in data
        and any(str(a).endswith("ForImageClassification") for a in archs)
    )


def model_labels(folder) -> list[str]:
    config = json.loads((Path(str(folder)) / "config.json").read_text())
    return [config["id2label"][k] for k in sorted(config["id2label"], key=int)]


def check_table(folder, table: dict | None, space, role: str, key: str) -> None:
    """The table maps labels the model has onto classes the attributes have, every class of
    every attribute it must judge reached by some label."""
    if not table:
        raise ValueError(f"{key}: no table for {folder} (verify.hf_labels.{folder}: "
                         "{attribute: {model label: class}})")  # fmt: skip
    labels = model_labels(folder)
    for name, classes in space.attributes:
        if name not in table:
            if role == "second":
                continue  # a second verifier judges the attributes it maps
            raise ValueError(f"verify.hf_labels.{folder}: no mapping for attribute {name!r}")
        mapping = table[name]
        unknown = sorted(set(mapping) - set(labels))
        if unknown:
            raise ValueError(
                f"verify.hf_labels.{folder}.{name}: {unknown} are not labels of the model "
                f"(its labels: {labels})"
            )
        wrong = sorted({c for c in mapping.values() if c not in classes})
        unreached = [c for c in classes if c not in mapping.values()]
        if wrong or unreached:
            raise ValueError(
                f"verify.hf_labels.{folder}.{name}: maps to {wrong or 'no'} unknown class(es) and "
                f"leaves {unreached or 'no'} class(es) of {list(classes)} without a label"
            )
