"""Attributes, cells and targets.

An *attribute* is a named categorical variable with ordered classes. A *cell* is one
combination of classes of a set of attributes (their cartesian product, row-major in the
attribute order). A *target* is a distribution over the cells of the attributes it guides;
independent per-attribute marginals are the special case of a product.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

CELL_SEPARATOR = "|"
_FORBIDDEN = set(CELL_SEPARATOR + "/\\")


def check_name(label: str, where: str) -> None:
    """Attribute and class names end up in cell names (joined by ``|``), manifest columns and
    file names: refuse what would make two cells share a name or break a path."""
    bad = sorted(set(label) & _FORBIDDEN) + sorted({c for c in label if not c.isprintable()})
    if not label.strip() or label != label.strip() or bad:
        raise ValueError(
            f"{where}: name {label[:40]!r} must be non-empty, without surrounding spaces, and "
            f"free of {' '.join(sorted(_FORBIDDEN))} and control characters"
        )


@dataclass(frozen=True)
class AttributeSpace:
    """Ordered attributes with ordered classes, e.g. {'skin': ('light', 'dark'), ...}."""

    attributes: tuple[tuple[str, tuple[str, ...]], ...]

    @classmethod
    def from_dict(cls, attrs: Mapping[str, Sequence[str]]) -> AttributeSpace:
        items = tuple((str(k), tuple(str(c) for c in v)) for k, v in attrs.items())
        for name, classes in items:
            for label in (name, *classes):
                check_name(label, f"attribute {name!r}")
            if len(classes) < 2:
                raise ValueError(f"attribute {name!r} needs at least 2 classes")
            if len(set(classes)) != len(classes):
                raise ValueError(f"attribute {name!r} has repeated classes")
        if not items:
            raise ValueError("an attribute space needs at least one attribute")
        return cls(items)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.attributes)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(len(c) for _, c in self.attributes)

    def classes(self, name: str) -> tuple[str, ...]:
        for n, c in self.attributes:
            if n == name:
                return c
        raise KeyError(f"unknown attribute {name!r}; known: {', '.join(self.names)}")

    def as_dict(self) -> dict[str, list[str]]:
        return {n: list(c) for n, c in self.attributes}

    def subspace(self, names: Sequence[str]) -> AttributeSpace:
        return AttributeSpace(tuple((n, self.classes(n)) for n in names))

    @property
    def n_cells(self) -> int:
        return int(np.prod(self.sizes))

    def cells(self) -> list[tuple[str, ...]]:
        return list(itertools.product(*(c for _, c in self.attributes)))

    def order_from(self, known: Mapping[str, Sequence[str]], what: str) -> dict[str, list[int]]:
        """Per attribute of this space that ``known`` (a model's own classes) also has: the
        indices into the model's class order that give this space's order. Class names must
        match as sets (any order); otherwise a ValueError names both lists."""
        order = {}
        for name, classes in self.attributes:
            if name not in known:
                continue
            theirs = [str(c) for c in known[name]]
            if sorted(theirs) != sorted(classes):
                raise ValueError(
                    f"attributes.{name}: classes {list(classes)} do not match the {what}'s "
                    f"classes {theirs} (the same names are needed, in any order)"
                )
            order[name] = [theirs.index(c) for c in classes]
        return order

    def cell_names(self) -> list[str]:
        return [CELL_SEPARATOR.join(c) for c in self.cells()]

    def cell_index(self, labels: Mapping[str, np.ndarray]) -> np.ndarray:
        """Class indices per attribute -> flat cell index (row-major)."""
        return np.ravel_multi_index(tuple(np.asarray(labels[n]) for n in self.names), self.sizes)

    def cell_labels(self, cells: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.names, np.unravel_index(np.asarray(cells), self.sizes), strict=True))


@dataclass(frozen=True)
class Target:
    """A distribution over the cells of ``space`` (the guided attributes)."""

    space: AttributeSpace
    probs: np.ndarray  # (n_cells,)

    def __post_init__(self) -> None:
        p = np.asarray(self.probs, dtype=np.float64)
        if p.shape != (self.space.n_cells,):
            raise ValueError(f"target needs {self.space.n_cells} cell probabilities, got {p.shape}")
        if (p < 0).any() or not np.isfinite(p).all():
            raise ValueError("target probabilities must be finite and non-negative")
        if not np.isclose(p.sum(), 1.0, atol=1e-6):
            raise ValueError(f"target probabilities must sum to 1, got {p.sum():.6f}")
        object.__setattr__(self, "probs", p / p.sum())

    @classmethod
    def from_marginals(
        cls, full: AttributeSpace, marginals: Mapping[str, Mapping[str, float] | Sequence[float]]
    ) -> Target:
        """Independent per-attribute targets; the joint is their product."""
        space = full.subspace(list(marginals))
        vectors = []
        for name, classes in space.attributes:
            m = marginals[name]
            if isinstance(m, Mapping):
                unknown = set(m) - set(classes)
                if unknown:
                    raise ValueError(
                        f"target.{name}: unknown class(es) {sorted(unknown)}; known: {list(classes)}"  # noqa: E501
                    )
                v = np.array([float(m.get(c, 0.0)) for c in classes])
            else:
                v = np.asarray(m, dtype=np.float64)
                if v.shape != (len(classes),):
                    raise ValueError(f"target.{name}: expected {len(classes)} probabilities")
            if (v < 0).any() or not np.isclose(v.sum(), 1.0, atol=1e-6):
                raise ValueError(f"target.{name}: probabilities must be >= 0 and sum to 1")
            vectors.append(v)
        joint = vectors[0]
        for v in vectors[1:]:
            joint = np.outer(joint, v).ravel()
        return cls(space, joint)

    @classmethod
    def from_cells(
        cls, full: AttributeSpace, names: Sequence[str], cells: Mapping[str, float]
    ) -> Target:
        """A joint target given as {'dark|yes': 0.25, ...}; unnamed cells get 0."""
        space = full.subspace(names)
        index = {c: i for i, c in enumerate(space.cell_names())}
        p = np.zeros(space.n_cells)
        for key, value in cells.items():
            if key not in index:
                raise ValueError(f"target cell {key!r} is not one of {list(index)}")
            p[index[key]] = float(value)
        return cls(space, p)

    @classmethod
    def uniform(cls, full: AttributeSpace, names: Sequence[str]) -> Target:
        space = full.subspace(names)
        return cls(space, np.full(space.n_cells, 1.0 / space.n_cells))

    def marginal(self, name: str) -> np.ndarray:
        axes = tuple(i for i, n in enumerate(self.space.names) if n != name)
        return self.probs.reshape(self.space.sizes).sum(axis=axes)


def joint_from_per_attribute(
    per_attribute: Mapping[str, np.ndarray], space: AttributeSpace
) -> np.ndarray:
    """Per-sample joint cell probabilities as the product of per-attribute probabilities.

    ``per_attribute[name]`` is (n, k_name); returns (n, n_cells) in ``space``'s cell order.
    """
    out = None
    for name in space.names:
        p = np.asarray(per_attribute[name])
        out = p if out is None else (out[:, :, None] * p[:, None, :]).reshape(len(p), -1)
    assert out is not None
    return out
