"""The pieces the schema is built of: ``ConfigError`` and pydantic's ``ValidationError`` said as
one line that starts with the key (``guidance.strength: must be a finite number >= 0``,
``model.prompts[0].n: must be >= 1``); the section base class, checked number types, free-form
values, and ``as_dict`` / ``replace`` (what ``dataclasses.asdict`` / ``replace`` were for the
dataclasses these models replace)."""

from __future__ import annotations

import math
import typing
from typing import Annotated, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    WrapValidator,
)


class ConfigError(ValueError):
    """A bad params file; the message names the key (e.g. ``audit_model.n``)."""


class Invalid(ValueError):
    """Raised by a validator: ``message`` about ``key``, relative to the value it checks ('' for
    that value itself, ``prompts`` or ``skin.light`` or ``[0]`` below it)."""

    def __init__(self, message: str, key: str = ""):
        super().__init__(message)
        self.message, self.key = message, key


def _short(value: object, limit: int = 80) -> str:
    """``repr`` of a value for an error message, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def join(path: str, key: str) -> str:
    """``join('model.prompts', '[0]')`` -> ``model.prompts[0]``; ``join('a', 'b')`` -> ``a.b``."""
    if not path or not key:
        return path or key
    return path + key if key.startswith("[") else f"{path}.{key}"


def dotted(loc: tuple) -> str:
    """A pydantic error location as a key: ``('model', 'prompts', 0, 'n')`` -> ``model.prompts[0].n``."""
    path = ""
    for part in loc:
        path = join(path, f"[{part}]" if isinstance(part, int) else str(part))
    return path


# pydantic's error types in the words of a params file ({input}: the value given, cut short)
_WORDS = {
    "missing": "required",
    "int_type": "expected an integer, got {input}",
    "float_type": "expected a number, got {input}",
    "finite_number": "must be a finite number, got {input}",
    "bool_type": "expected true/false, got {input}",
    "string_type": "expected a string, got {input}",
    "list_type": "expected a list, got {input}",
    "dict_type": "expected a mapping, got {kind}",
    "model_type": "expected a mapping, got {kind}",
    "literal_error": "must be one of {expected}, got {input}",
    "greater_than_equal": "must be >= {ge}",
    "greater_than": "must be > {gt}",
    "less_than_equal": "must be <= {le}",
    "less_than": "must be < {lt}",
}
_UNKNOWN = ("extra_forbidden", "invalid_key")


def config_error(exc: ValidationError, model: type[BaseModel], root: str = "params") -> ConfigError:
    """The first problem of ``exc`` (unknown keys first, as they often explain the rest) as a
    ``ConfigError``; ``model`` is the class validated, ``root`` its name where the key is empty."""
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if e["type"] in _UNKNOWN]
    if unknown:
        parent = min((e["loc"][:-1] for e in unknown), key=len)
        names = sorted(str(e["loc"][-1]) for e in unknown if e["loc"][:-1] == parent)
        where = dotted(parent)
        allowed = ", ".join(sorted(_model_at(model, parent).model_fields))
        full = ", ".join(join(where, name) for name in names)
        return ConfigError(f"unknown key(s): {full} (allowed in {where or root}: {allowed})")
    error = errors[0]
    path = dotted(error["loc"]) or root
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ConfigError):
        return ConfigError(str(cause))  # a check across sections: the message names its keys
    if isinstance(cause, Invalid):
        return ConfigError(f"{join(dotted(error['loc']), cause.key) or root}: {cause.message}")
    if cause is not None:
        return ConfigError(f"{path}: {cause}")
    value, kind = error.get("input"), error["type"]
    if kind == "float_type" and isinstance(value, int) and not isinstance(value, bool):
        kind = "finite_number"  # an integer too large for a float
    words = _WORDS.get(kind, error["msg"])
    args = {**(error.get("ctx") or {}), "input": _short(value), "kind": type(value).__name__}
    return ConfigError(f"{path}: {words.format(**args)}")


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel]:
    """The model class validating the mapping at ``loc`` (list indexes skipped)."""
    for part in loc:
        if isinstance(part, str):
            model = _model_in(model.model_fields[part].annotation)
    return model


def _model_in(tp: object) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    return next((m for arg in typing.get_args(tp) if (m := _model_in(arg))), None)


MAX_INT = 2**53  # an integer setting above this is a typo (and overflows numpy's int64 math)


class Section(BaseModel):
    """A params section: unknown keys refused, no coercion (an int is read as a float where a
    number is wanted, as YAML writes ``10`` for ``10.0``; nothing else), frozen, finite."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def __str__(self) -> str:
        return repr(self)  # ``Name(field=value, ...)``, as a dataclass prints


def _in_int_range(n: int) -> int:
    if abs(n) > MAX_INT:
        raise Invalid(f"{_short(n)} is out of range (|n| <= {MAX_INT:,})")
    return n


def _not_huge(x: float) -> float:
    if abs(x) > 1e300:  # inf and nan: allow_inf_nan=False
        raise Invalid(f"must be a finite number, got {_short(x)}")
    return x


def _all_finite(value: object, key: str = "") -> None:
    """Numbers anywhere in a free-form value (targets, cells) must be finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"must be a finite number, got {value}", key)
    if isinstance(value, dict):
        for k, v in value.items():
            _all_finite(v, join(key, str(k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _all_finite(v, f"{key}[{i}]")


def _finite_inside(value: dict | list) -> dict | list:
    _all_finite(value)
    return value


Int = Annotated[int, AfterValidator(_in_int_range)]
Number = Annotated[float, AfterValidator(_not_huge)]
FreeDict = Annotated[dict, AfterValidator(_finite_inside)]
FreeList = Annotated[list, AfterValidator(_finite_inside)]

_WORDED = {"literal_error", "greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def worded(message: str) -> WrapValidator:
    """Say a value outside its choices or bounds as ``message`` (``{value}``: the value given);
    a value of the wrong type keeps its own words."""

    def check(value: object, handler):
        try:
            return handler(value)
        except ValidationError as exc:
            if exc.errors()[0]["type"] not in _WORDED:
                raise
            if exc.errors()[0]["type"] == "literal_error" and not isinstance(value, str):
                raise Invalid(f"expected a string, got {_short(value)}") from None
            raise Invalid(message.replace("{value}", _short(value))) from None

    return WrapValidator(check)


AtLeast0 = Annotated[Int, Field(ge=0)]
AtLeast1 = Annotated[Int, Field(ge=1)]
Positive = Annotated[Number, Field(gt=0)]
Unit = Annotated[Number, Field(ge=0, le=1), worded("must be in [0, 1]")]
FiniteAtLeast0 = Annotated[Number, Field(ge=0), worded("must be a finite number >= 0")]


def is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


M = TypeVar("M", bound=BaseModel)


def as_dict(obj: BaseModel) -> dict:
    """Fields in their declared order, sections as plain dicts, lists as lists: what
    ``dataclasses.asdict`` gave (dataset fingerprints hash it)."""
    return obj.model_dump()


def replace(obj: M, /, **changes: object) -> M:
    """A copy of ``obj`` with ``changes``, each value and the section's own rules checked
    (``ConfigError`` naming the key). The rules across sections (``Params._check_run``: folders
    that overlap, the target against the attributes, ...) are a params file's and run in
    ``parse_params`` only: a derived run may break them on purpose (the downstream experiment's
    rejection control writes into ``downstream.control_dir``)."""
    try:
        return type(obj)(**{**vars(obj), **changes})
    except ValidationError as exc:
        raise config_error(exc, type(obj), type(obj).__name__) from None


# settings added after datasets were published: at their defaults they are left out of every
# hash (params, guidance, ADP inputs), so the runs that never set them keep their hashes
LATER_KEYS = {
    ("generate", "accept_partial"): False,
    ("adp", "max_rejected"): 0.05,
    ("reference", "columns"): None,
    ("reference", "classes"): None,
    ("reference", "ignore_case"): True,
    ("output", "audit_dir"): "data/audit",
    ("output", "report_dir"): "data/report",
    ("verify", "hf_labels"): None,
}
_UNSET = object()


def hashed(section: str, values: dict) -> dict:
    """``values`` of a ``section`` as hashes see them: later settings at their defaults left out."""
    return {k: v for k, v in values.items() if LATER_KEYS.get((section, k), _UNSET) != v}
