"""A fast yes/no check of a document against the manifest schema, compiled from the schema file.

``jsonschema`` gives the best error messages, but importing it and walking a document with it
costs about a millisecond per manifest. Most manifests are valid, so validation first asks this
checker, compiled once from the same schema file into plain Python closures, whether a document
is valid; only when it says no does jsonschema run to explain why. The schema file stays the
one definition of a manifest's shape: nothing here restates it.

The checker supports the keywords the manifest schema uses (type, const, enum, pattern, string
and number bounds, items, properties, additionalProperties, required, propertyNames, oneOf, anyOf,
allOf, not, local ``$ref``). A schema using any other keyword makes :func:`compile_schema` raise
:class:`Unsupported`, and callers then use jsonschema alone. A test checks that this checker and
jsonschema agree on many generated documents.

Three rules are stricter than JSON Schema's, here and in :func:`.schema.validator` alike: an
integer is an ``int`` (2.0 is not one), a number is finite (no NaN or infinity), and a pattern's
``$`` is the end of the text (:func:`ecma_regex`).
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

#: Keywords that only annotate: they never make a document invalid.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"}
    | {"deprecated", "readOnly", "writeOnly"}
)


class Unsupported(Exception):
    """The schema uses a keyword this checker does not implement."""


def _is_type(value: Any, kind: str) -> bool:
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if isinstance(value, bool):
        return False
    if kind == "number":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if kind == "integer":
        return isinstance(value, int)
    raise Unsupported(f"type {kind!r}")


def is_integer(value: Any) -> bool:
    """The manifest's "integer": an int written as one. Stricter than JSON Schema's, where
    2.0 is an integer too: a count or an epoch written ``2.0`` is a mistake (a run named
    ``s0.0``), so both checkers refuse it."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """The manifest's "number": finite. NaN and infinity (``.nan``, ``.inf``) are refused."""
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, int) and not isinstance(value, bool)


@functools.lru_cache(maxsize=256)
def ecma_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` compiled for Python with the meaning JSON Schema (ECMA-262) gives it.

    In ECMA-262 ``$`` matches only at the very end of the text; Python's ``$`` also matches
    before a final newline, so ``^[a-z]+$`` would accept ``"name\\n"``. Each ``$`` outside a
    character class becomes ``\\Z``; the schema keeps portable ``^...$`` for editors.
    """
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            if pattern[index + 1 : index + 2] == "^":  # "[^" ...
                out.append("[^")
                index += 2
                if pattern[index : index + 1] == "]":  # "[^]...]": a literal "]" first
                    out.append("]")
                    index += 1
                continue
            if pattern[index + 1 : index + 2] == "]":
                out.append("[]")
                index += 2
                continue
        elif char == "$":
            char = r"\Z"
        out.append(char)
        index += 1
    return re.compile("".join(out))


def _equal(one: Any, two: Any) -> bool:
    """JSON equality, as jsonschema has it: true is not 1, and 1 equals 1.0."""
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, dict) or isinstance(two, dict):
        return (
            isinstance(one, dict)
            and isinstance(two, dict)
            and one.keys() == two.keys()
            and all(_equal(one[k], two[k]) for k in one)
        )
    if isinstance(one, list) or isinstance(two, list):
        return (
            isinstance(one, list)
            and isinstance(two, list)
            and len(one) == len(two)
            and all(_equal(a, b) for a, b in zip(one, two, strict=True))
        )
    if isinstance(one, bool) != isinstance(two, bool):
        return False
    return bool(one == two)


class _Compiler:
    def __init__(self, root: Mapping[str, Any]):
        self.root = root
        self.refs: dict[str, Check] = {}

    def node(self, node: Any) -> Check:
        if node is True:
            return lambda value: True
        if node is False:
            return lambda value: False
        if not isinstance(node, Mapping):
            raise Unsupported(f"schema node {node!r}")
        checks = [
            self.keyword(key, argument, node)
            for key, argument in node.items()
            if key not in _ANNOTATIONS and not key.startswith("x-")
        ]
        if not checks:
            return lambda value: True
        if len(checks) == 1:
            return checks[0]
        return lambda value: all(check(value) for check in checks)

    def ref(self, target: str) -> Check:
        if not target.startswith("#/$defs/") or target.count("/") != 2:
            raise Unsupported(f"$ref {target!r}")
        if target not in self.refs:
            compiled: list[Check] = []
            self.refs[target] = lambda value: compiled[0](value)  # allows recursive schemas
            compiled.append(self.node(self.root["$defs"][target.rsplit("/", 1)[1]]))
        return self.refs[target]

    def keyword(self, key: str, arg: Any, node: Mapping[str, Any]) -> Check:
        if key == "$ref":
            return self.ref(arg)
        if key == "type":
            kinds = [arg] if isinstance(arg, str) else list(arg)
            for kind in kinds:
                _is_type(None, kind)  # raises Unsupported for an unknown type name
            return lambda value: any(_is_type(value, kind) for kind in kinds)
        if key == "const":
            return lambda value: _equal(value, arg)
        if key == "enum":
            return lambda value: any(_equal(value, choice) for choice in arg)
        if key == "pattern":
            search = ecma_regex(arg).search
            return lambda value: not isinstance(value, str) or search(value) is not None
        if key in _BOUNDS:
            kind, fails = _BOUNDS[key]
            return lambda value: not _is_type(value, kind) or not fails(value, arg)
        if key == "items":
            item = self.node(arg)
            return lambda value: not isinstance(value, list) or all(item(v) for v in value)
        if key == "required":
            return lambda value: not isinstance(value, dict) or all(k in value for k in arg)
        if key == "properties":
            props = {name: self.node(sub) for name, sub in arg.items()}
            return lambda value: (
                not isinstance(value, dict)
                or all(props[k](v) for k, v in value.items() if k in props)
            )
        if key == "additionalProperties":
            if "patternProperties" in node:
                raise Unsupported("patternProperties")
            known = frozenset(node.get("properties", ()))
            extra = self.node(arg)
            return lambda value: (
                not isinstance(value, dict)
                or all(extra(v) for k, v in value.items() if k not in known)
            )
        if key == "propertyNames":
            name = self.node(arg)
            return lambda value: not isinstance(value, dict) or all(name(k) for k in value)
        if key in ("oneOf", "anyOf", "allOf"):
            branches = [self.node(sub) for sub in arg]
            if key == "oneOf":
                return lambda value: sum(1 for b in branches if b(value)) == 1
            if key == "anyOf":
                return lambda value: any(b(value) for b in branches)
            return lambda value: all(b(value) for b in branches)
        if key == "not":
            inner = self.node(arg)
            return lambda value: not inner(value)
        raise Unsupported(key)


_BOUNDS: dict[str, tuple[str, Callable[[Any, Any], bool]]] = {
    "minimum": ("number", lambda v, m: v < m),
    "maximum": ("number", lambda v, m: v > m),
    "exclusiveMinimum": ("number", lambda v, m: v <= m),
    "exclusiveMaximum": ("number", lambda v, m: v >= m),
    "minLength": ("string", lambda v, m: len(v) < m),
    "maxLength": ("string", lambda v, m: len(v) > m),
    "minItems": ("array", lambda v, m: len(v) < m),
    "maxItems": ("array", lambda v, m: len(v) > m),
    "minProperties": ("object", lambda v, m: len(v) < m),
    "maxProperties": ("object", lambda v, m: len(v) > m),
}


def compile_schema(schema: Mapping[str, Any]) -> Check:
    """A function telling whether a document is valid under ``schema`` (draft 2020-12 subset).

    Raises :class:`Unsupported` when the schema uses a keyword outside the supported subset.
    """
    return _Compiler(schema).node(schema)
