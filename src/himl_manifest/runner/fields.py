"""A container's public fields, their types, and typed values from flags or manifest params.

A field is a public attribute of a container: annotated on its class (or a base class), or set
in ``__init__`` without an annotation (then typed from its value). Values come either as text
(``--max_epochs=5``) or as JSON data (manifest ``params``); both go through :func:`coerce`,
which checks them against the field's type: bool (``true/false/yes/no/1/0``), int, float, str,
Path, Enum and Literal (case-insensitive), lists (comma-separated text), Optional and unions.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himl_manifest.diagnostics import did_you_mean
from himl_manifest.errors import ConfigError

_TRUE = frozenset({"true", "yes", "1", "on", "y", "t"})
_FALSE = frozenset({"false", "no", "0", "off", "n", "f"})
_NONE = frozenset({"none", "null", ""})
_SIMPLE = (bool, int, float, str, Path, enum.Enum)


@dataclass(frozen=True)
class Field:
    """One public field of a container class."""

    name: str
    type: Any
    help: str
    owner: type  # the class that declares it (for grouping in --help)


def _hints(klass: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(klass, include_extras=True)
    except Exception:  # annotations that cannot be evaluated: type them from their values
        return {}


def _split_annotated(tp: Any) -> tuple[Any, str]:
    if typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        return base, next((e for e in extras if isinstance(e, str)), "")
    return tp, ""


def type_of_value(value: Any) -> Any:
    """The field type inferred from an unannotated value."""
    if value is None:
        return str | None
    if isinstance(value, list):
        item = type(value[0]) if value and isinstance(value[0], _SIMPLE) else str
        return list.__class_getitem__(item)
    return type(value)


def container_fields(container: object) -> dict[str, Field]:
    """Every public field of ``container``, in declaration order (base classes first)."""
    fields: dict[str, Field] = {}
    for klass in reversed(type(container).__mro__):
        if klass is object:
            continue
        hints = _hints(klass)
        for name in vars(klass).get("__annotations__", {}):
            if name.startswith("_") or name in fields:
                continue
            raw = hints.get(name)
            if raw is None or typing.get_origin(raw) is typing.ClassVar:
                if raw is not None or not hasattr(container, name):
                    continue
                raw = type_of_value(getattr(container, name))
            base, help_text = _split_annotated(raw)
            fields[name] = Field(name, base, help_text, klass)
    for name, value in vars(container).items():
        if name.startswith("_") or name in fields or callable(value):
            continue
        if value is None or isinstance(value, (*_SIMPLE, list)):
            fields[name] = Field(name, type_of_value(value), "", type(container))
    return fields


def type_label(tp: Any) -> str:
    """A short, readable name of a field type for --help."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(a) for a in typing.get_args(tp))
    if origin is list:
        args = typing.get_args(tp)
        return f"list[{type_label(args[0]) if args else 'str'}]"
    if origin is typing.Literal:
        return "{" + ",".join(str(a) for a in typing.get_args(tp)) + "}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "{" + ",".join(m.name for m in tp) + "}"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def is_bool(tp: Any) -> bool:
    """True for ``bool`` and ``bool | None``: fields that take ``--flag`` and ``--no-flag``."""
    if tp is bool:
        return True
    args = set(typing.get_args(tp))
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and args == {bool, type(None)}


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a bool: use true/false, yes/no or 1/0")


def _a(label: str) -> str:
    """``an int``, ``a float``: a type label with its article."""
    return f"{'an' if label[:1].lower() in 'aeiou' else 'a'} {label}"


def _not_a(value: Any, tp: Any) -> ValueError:
    return ValueError(f"{value!r} is not {_a(type_label(tp))}")


def _coerce_union(value: Any, members: tuple[Any, ...]) -> Any:
    if type(None) in members and (
        value is None or (isinstance(value, str) and value.lower() in _NONE)
    ):
        return None
    # Try the strictest types first so "2" is an int, "0.5" a float and "auto" a string.
    order = (bool, int, float, Path, str)
    ranked = sorted(
        (m for m in members if m is not type(None)),
        key=lambda m: order.index(m) if m in order else (1 if typing.get_origin(m) else 0),
    )
    errors = []
    for member in ranked:
        try:
            return coerce(value, member)
        except (ValueError, TypeError) as exc:
            errors.append(str(exc))
    raise ValueError(f"{value!r} is not {_a(' | '.join(type_label(m) for m in members))}")


def _coerce_list(value: Any, tp: Any) -> list[Any]:
    args = typing.get_args(tp)
    item = args[0] if args else str
    if isinstance(value, str):
        items: list[Any] = [v.strip() for v in value.split(",")] if value.strip() else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        raise _not_a(value, tp)
    return [coerce(v, item) for v in items]


def _coerce_choice(value: Any, choices: list[Any], label: str) -> Any:
    for choice in choices:
        name = choice.name if isinstance(choice, enum.Enum) else choice
        raw = choice.value if isinstance(choice, enum.Enum) else choice
        if value == raw or value is choice:
            return choice
        if isinstance(value, str) and value.lower() in (str(name).lower(), str(raw).lower()):
            return choice
    raise ValueError(f"{value!r} is not one of {label}")


def _coerce_scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            return parse_bool(value)
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _not_a(value, tp)
    if tp is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise _not_a(value, tp)
        if isinstance(value, (int, float)):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise _not_a(value, tp) from None
        raise _not_a(value, tp)
    if tp is float:
        if isinstance(value, bool):
            raise _not_a(value, tp)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _not_a(value, tp) from None
        raise _not_a(value, tp)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _not_a(value, tp)
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise _not_a(value, tp)
    if isinstance(value, tp):
        return value
    try:
        return tp(value)
    except Exception as exc:
        raise ValueError(f"{value!r} is not {_a(type_label(tp))}: {exc}") from exc


def coerce(value: Any, tp: Any) -> Any:
    """``value`` (text from a flag, or JSON data) as a value of type ``tp``; ValueError if not."""
    tp, _ = _split_annotated(tp)
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp))
    if origin in (list, tuple, typing.Sequence) or tp is list:
        return _coerce_list(value, tp)
    if origin is typing.Literal:
        return _coerce_choice(value, list(typing.get_args(tp)), type_label(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _coerce_choice(value, list(tp), type_label(tp))
    if tp is type(None):
        if value is None or (isinstance(value, str) and value.lower() in _NONE):
            return None
        raise _not_a(value, tp)
    return _coerce_scalar(value, tp)


def field_value(field: Field, value: Any, container: str) -> Any:
    """``value`` (text from a flag, or JSON data) for ``field`` of class ``container``: the one
    conversion rule of flags, manifest params and ``himl validate --check-imports``. A value of
    the wrong type is a ValueError naming the field: ``'big' is not an int
    (BlobsClassifier.hidden_size)``."""
    try:
        return coerce(value, field.type)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{exc} ({container}.{field.name})") from exc


def unknown_field(name: str, fields: Mapping[str, Field], container: str) -> str:
    """``BlobsClassifier has no field 'learning_rat' (did you mean 'learning_rate'?)``."""
    hint = f" ({close})" if (close := did_you_mean(name, fields)) else ""
    return f"{container} has no field {name!r}{hint}"


def apply_overrides(container: object, overrides: Mapping[str, Any], *, source: str) -> None:
    """Set fields of ``container`` from ``overrides`` (text or JSON values), all checked first."""
    fields = container_fields(container)
    owner = type(container).__name__
    values: dict[str, Any] = {}
    problems = []
    for name, raw in overrides.items():
        field = fields.get(name)
        if field is None:
            problems.append(f"{source}: {unknown_field(name, fields, owner)}")
            continue
        try:
            values[name] = field_value(field, raw, owner)
        except ValueError as exc:
            problems.append(f"{source}: {name}: {exc}")
    if problems:
        raise ConfigError("\n".join(problems))
    for name, value in values.items():
        setattr(container, name, value)


def field_values(container: object) -> dict[str, Any]:
    """Every field's current value (what experiment_summary.txt and the run's params record)."""
    return {name: getattr(container, name, None) for name in container_fields(container)}
