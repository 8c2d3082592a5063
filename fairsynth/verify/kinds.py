"""Verifier kinds: each one registered entry, the only place that knows it by name.

A params value (``verify.verifier``, ``verify.second``, ``adp.pseudo_labeller``) names a
registered kind (``deepface``), a Python callable (``module:factory``: a factory that returns
an object with ``attributes``, ``verify(images) -> Verdict`` and ``close()``), or, failing
those, a classifier folder. A kind says how to load it, which files ``weights check`` lists,
which folder fingerprints it by content, which roles it may take, what image size it takes,
and which rules it adds to a params file. Adding a kind is one ``register`` call.

A kind's loader may be given as ``"module:function"`` (as entry points are): the params are
validated without importing torch or a classifier's code, which load only when a run loads.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fairsynth.verify.deepface_config import attribute_maps, required_files
from fairsynth.verify.hf_config import FILES as HF_FILES
from fairsynth.verify.hf_config import check_table, is_hf_folder

ROLES = ("verifier", "second", "pseudo_labeller")
CLASSIFIER_FILES = ("config.json", "model.safetensors")


@dataclass(frozen=True)
class VerifierKind:
    """``loader(value, settings, device)``: the verifier (or ``"module:function"`` naming it). ``folder(value)``: the folder whose
    contents fingerprint it (``None``: a service named by its settings, not by files).
    ``required(value, settings, name)``: ``weights check`` rows (what, file, path, present)
    for the resolved ``value`` that the params call ``name``.
    ``check(settings, space, role, value)``: params-file rules (``ValueError`` naming the key).
    ``settings_key``: its own section under ``verify`` (``None``: it takes none).
    ``may_download(settings)``: whether missing files may be fetched at run time.
    ``input_size(value)``: the side of the square images it takes (``None``: any size)."""

    name: str
    loader: str | Callable[[Any, Any, str], Any]
    folder: Callable[[Any], str | Path | None]
    required: Callable[[Any, Any, str], list[dict]]
    roles: tuple[str, ...] = ROLES
    settings_key: str | None = None
    check: Callable[[Any, Any, str, Any], None] | None = None
    may_download: Callable[[Any], bool] = lambda settings: False
    input_size: Callable[[Any], int | None] = lambda value: None

    def load(self, value: Any, settings: Any, device: str) -> Any:
        loader = self.loader
        if isinstance(loader, str):
            module, _, name = loader.partition(":")
            loader = getattr(importlib.import_module(module), name)
        return loader(value, settings, device)


_KINDS: dict[str, VerifierKind] = {}
FOLDER = "classifier folder"
CALLABLE = "python callable"
HF = "hugging face image classification"
CALLABLE_FORM = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")  # module.path:factory


def register(kind: VerifierKind) -> VerifierKind:
    _KINDS[kind.name] = kind
    return kind


def kind_of(value: str | Path) -> VerifierKind:
    """The registered kind ``value`` names, a callable's (``module:factory``), else the
    classifier-folder kind."""
    name = str(value)
    if name in _KINDS:
        return _KINDS[name]
    if CALLABLE_FORM.match(name):
        return _KINDS[CALLABLE]
    return _KINDS[HF if is_hf_folder(name) else FOLDER]


def kind_names() -> list[str]:
    return [name for name in _KINDS if name not in (FOLDER, CALLABLE, HF)]


def settings_for(kind: VerifierKind, verify_section: Any) -> Any:
    """The kind's own settings section of ``verify`` (``None`` for a kind without one)."""
    return getattr(verify_section, kind.settings_key) if kind.settings_key else None


def verifier_folder(value: str | Path | None) -> str | Path | None:
    """The folder that holds ``value``'s weights (``None`` for none, or a kind without files)."""
    return None if value is None else kind_of(value).folder(value)


def _classifier_rows(value, settings, name: str) -> list[dict]:
    folder = Path(value)
    return [
        {"what": f"verifier {name}", "file": f, "path": str(folder / f),
         "present": (folder / f).is_file()}
        for f in CLASSIFIER_FILES
    ]  # fmt: skip


def _classifier_input_size(value) -> int | None:
    """A classifier folder records its input side in ``config.json`` (the toy world's: 32)."""
    try:
        return int(json.loads((Path(value) / "config.json").read_text()).get("image_size", 32))
    except (OSError, ValueError, TypeError, AttributeError):
        return None  # an unreadable folder is weights check's to report


def _callable_factory(value: str):
    module, _, name = value.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"{value}: cannot import the verifier factory ({exc})") from None


def _load_callable(value, settings, device):
    verifier = _callable_factory(str(value))()
    missing = [a for a in ("attributes", "verify", "close") if not hasattr(verifier, a)]
    if missing:
        raise ValueError(f"{value}: the object its factory returns has no {missing}")
    return verifier


def _callable_rows(value, settings, name: str) -> list[dict]:
    """The factory's module, found (importable) or not; nothing else is a file of its own."""
    module = str(value).partition(":")[0]
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    where = spec.origin if spec is not None and spec.origin else f"python module {module}"
    return [{"what": f"verifier factory {name}", "file": module, "path": where,
             "present": spec is not None}]  # fmt: skip


def _deepface_rows(value, settings, name: str) -> list[dict]:
    return required_files(settings)


def _deepface_check(settings, space, role: str, value=None) -> None:
    """The params' attributes must be mapped, with their classes in order (a second verifier
    judges the attributes it maps and may skip the others)."""
    maps = attribute_maps(settings.attributes)
    for name, classes in space.attributes:
        if name not in maps and role == "second":
            continue
        if name not in maps:
            raise ValueError(
                f"verify.deepface.attributes: no mapping for attribute {name!r} "
                f"(mapped: {sorted(maps)})"
            )
        if tuple(maps[name].classes) != tuple(classes):
            raise ValueError(
                f"verify.deepface.attributes.{name}.classes: {list(maps[name].classes)} "
                f"must be the attribute's classes {list(classes)}, in that order"
            )


register(
    VerifierKind(
        FOLDER, "fairsynth.verify.classifier:load_folder", lambda v: v, _classifier_rows,
        input_size=_classifier_input_size,
    )
)  # fmt: skip
register(VerifierKind(CALLABLE, _load_callable, lambda v: None, _callable_rows))


def _hf_rows(value, settings, name: str) -> list[dict]:
    folder = Path(value)
    return [{"what": f"image classifier {name}", "file": f, "path": str(folder / f),
             "present": (folder / f).is_file()} for f in HF_FILES]  # fmt: skip


def _hf_check(settings, space, role: str, value) -> None:
    key = {"second": "verify.second", "pseudo_labeller": "adp.pseudo_labeller"}.get(
        role, "verify.verifier"
    )
    check_table(value, (settings or {}).get(str(value)), space, role, key)


register(
    VerifierKind(
        HF, "fairsynth.verify.hf:load_hf", lambda v: v, _hf_rows, settings_key="hf_labels",
        check=_hf_check,
    )
)  # fmt: skip
register(
    VerifierKind(
        "deepface",
        "fairsynth.verify.deepface:load_deepface",
        lambda v: None,
        _deepface_rows,
        settings_key="deepface",
        check=_deepface_check,
        may_download=lambda settings: bool(settings.allow_download),
    )
)
