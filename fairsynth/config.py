"""``params.yaml`` -> typed, validated objects. Errors name the offending key."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A bad params file; the message names the key (e.g. ``audit_model.n``)."""


@dataclass(frozen=True)
class ReferenceConfig:
    path: str = "data/reference"
    n: int = 20_000
    seed: int = 0

    def validate(self, key: str) -> None:
        _require(self.n >= 1, f"{key}.n", "must be >= 1")


@dataclass(frozen=True)
class AuditModelConfig:
    n: int = 1000
    seed: int = 0
    steps: int = 50
    batch_size: int = 64

    def validate(self, key: str) -> None:
        for name in ("n", "steps", "batch_size"):
            _require(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")


@dataclass(frozen=True)
class Params:
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    audit_model: AuditModelConfig = field(default_factory=AuditModelConfig)


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    return parse_params(raw)


def parse_params(raw: object) -> Params:
    return _build(Params, raw, "")


def _build(cls: type, raw: object, key: str):
    where = key or "params"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        full = ", ".join(f"{key + '.' if key else ''}{u}" for u in unknown)
        raise ConfigError(
            f"unknown key(s): {full} (allowed in {where}: {', '.join(sorted(names))})"
        )
    values = {}
    for name, value in raw.items():
        sub = f"{key}.{name}" if key else name
        values[name] = _coerce(hints[name], value, sub)
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def _coerce(tp, value, key: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        tp = next(a for a in args if a is not type(None))
        return _coerce(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")
