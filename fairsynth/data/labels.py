"""A user's labels file as the params' attributes: which column names each image, which holds
each attribute, and how the user's values map onto the params' classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from fairsynth.core.attributes import AttributeSpace


METADATA_FILES = ("metadata.csv", "metadata.jsonl")  # Hugging Face ImageFolder
FILE_COLUMNS = ("file", "file_name", "key")


@dataclass(frozen=True)
class LabelMapping:
    """How a user's labels meet the params' attributes: ``columns`` (attribute -> the column
    holding it, default: the attribute's name), ``classes`` (attribute -> {their value: our
    class}), and ``ignore_case`` (``Dark`` is ``dark``; surrounding spaces never count)."""

    columns: dict[str, str] = field(default_factory=dict)
    classes: dict[str, dict[str, str]] = field(default_factory=dict)
    ignore_case: bool = True


def labels_from_frame(
    frame: pd.DataFrame, space: AttributeSpace, where: str, mapping: LabelMapping = LabelMapping()
) -> dict[str, np.ndarray]:
    out = {}
    for name, classes in space.attributes:
        column = mapping.columns.get(name, name)
        if column not in frame.columns:
            raise ValueError(
                f"{where}: no column {column!r} for attribute {name!r} (columns: "
                f"{list(frame.columns)}; reference.columns maps an attribute to its column)"
            )
        values = frame[column].astype(str).str.strip()
        values = values.map(lambda v, table=mapping.classes.get(name, {}): table.get(v, v))
        index = {c: i for i, c in enumerate(classes)}
        if mapping.ignore_case:
            index = {**{c.lower(): i for c, i in index.items()}, **index}
            values = values.map(lambda v, index=index: v if v in index else v.lower())
        unknown = sorted(set(values) - set(index))
        if unknown:
            raise ValueError(
                f"{where}: column {column!r} has unknown class(es) {unknown[:5]}; known: "
                f"{list(classes)} (reference.classes maps your values to these)"
            )
        out[name] = values.map(index).to_numpy(dtype=np.int64)
    return out


def read_labels_file(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str)
    if path.suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    raise ValueError(f"labels file {path} must be .csv, .jsonl or .parquet")


def relative_path(value: str, root: Path) -> str:
    path = Path(value)
    if path.is_absolute() and path.resolve().is_relative_to(root):
        return path.resolve().relative_to(root).as_posix()
    return path.as_posix().removeprefix("./")


def match_labels(
    frame: pd.DataFrame, col: str, names: list[str], labels_file: str, data: str
) -> pd.DataFrame:
    """Every label row must name exactly one image: no repeated rows, none without an image."""
    repeated = frame[col][frame[col].duplicated()].unique().tolist()
    if repeated:
        raise ValueError(
            f"{labels_file}: {len(repeated)} {col}(s) labelled more than once, e.g. {repeated[:3]}"
        )
    missing = sorted(set(frame[col]) - set(names))
    if missing:
        raise ValueError(
            f"{labels_file}: {len(missing)} labelled {col}(s) are not in {data}, e.g. {missing[:3]}"
        )
    return frame
