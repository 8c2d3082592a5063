"""Worlds as plugins: what a world (the embedded toy faces, or one of a user's) offers, by name.

A plugin is a function registered under the ``fairsynth.plugins`` entry-point group; it is
called once, on first use, with this module, and registers what it provides:

- ``artefact(kind, name, path)``: a shipped folder a params value may name, e.g. the model
  ``toyfaces`` (kinds: ``model``, ``adp``, ``verifier``, ``pseudo_labeller``);
- ``provide(role, name, obj)``: anything else the app asks for by name: the default attribute
  space (``attributes``), a reference builder (``reference``), a downstream test set
  (``test_set``), CLI commands (``commands``).

The library below the app never imports a world: it is given resolved paths and objects.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

GROUP = "fairsynth.plugins"

_artefacts: dict[tuple[str, str], Path] = {}
_provided: dict[tuple[str, str], object] = {}
_loaded = False


def artefact(kind: str, name: str, path: str | Path) -> None:
    _artefacts[(kind, name)] = Path(path)


def provide(role: str, name: str, obj: object) -> None:
    _provided[(role, name)] = obj


def load() -> None:
    """Call every installed plugin once (idempotent)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import sys

    for ep in sorted(entry_points(group=GROUP), key=lambda e: e.name):
        ep.load()(sys.modules[__name__])


def resolve(kind: str, value: str | Path) -> Path | str:
    """A registered artefact's folder (e.g. ``('model', 'toyfaces')``); any other value is a
    path or hub id and comes back as given."""
    load()
    return _artefacts.get((kind, str(value)), value)


def is_artefact(kind: str, value: str | Path | None) -> bool:
    load()
    return (kind, str(value)) in _artefacts


def provided(role: str, name: str | None = None):
    """What a plugin provides for ``role`` under ``name`` (the first registered when ``name`` is
    None). A LookupError names what is registered."""
    load()
    if name is None:
        for (r, _), obj in _provided.items():
            if r == role:
                return obj
    elif (role, name) in _provided:
        return _provided[(role, name)]
    known = sorted(n for r, n in _provided if r == role)
    raise LookupError(
        f"no plugin provides {role} {name!r} (installed: {known or 'none'}; plugins register "
        f"under the {GROUP!r} entry-point group)"
    )


def all_provided(role: str) -> dict[str, object]:
    load()
    return {n: obj for (r, n), obj in _provided.items() if r == role}
