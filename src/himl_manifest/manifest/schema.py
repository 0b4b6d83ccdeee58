"""The manifest JSON Schema: where it lives, and its errors turned into readable diagnostics.

The schema file in ``schema/`` at the repository root is the only definition of a manifest's
shape; the wheel carries an identical copy under ``himl_manifest/_schema/``.
"""

from __future__ import annotations

import datetime
import functools
import json
import math
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from himl_manifest.diagnostics import did_you_mean
from himl_manifest.manifest.fastcheck import (
    Check,
    Unsupported,
    compile_schema,
    ecma_regex,
    is_integer,
    is_number,
)

if TYPE_CHECKING:  # jsonschema is imported where validation happens, not on start-up
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import ValidationError

SCHEMA_FILE = "experiment.v1.schema.json"
API_VERSION = "himl/v1"


def schema_text() -> str:
    """The schema's JSON text: the wheel's copy, or ``schema/`` of a source checkout."""
    shipped = resources.files("himl_manifest").joinpath("_schema", SCHEMA_FILE)
    if shipped.is_file():
        return shipped.read_text(encoding="utf-8")
    source = Path(__file__).resolve().parents[3] / "schema" / SCHEMA_FILE
    return source.read_text(encoding="utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


def schema_version() -> str:
    return str(schema()["x-schema-version"])


@functools.cache
def validator() -> Draft202012Validator:
    """jsonschema's draft 2020-12 validator of the schema, with the manifest's stricter rules,
    the same as the fast check's: an integer is written as one (2.0 is not), a number is
    finite (no NaN or infinity), and a pattern's ``$`` is the end of the text as in ECMA-262
    (Python's ``re`` also lets it match before a final newline)."""
    from jsonschema import Draft202012Validator, validators
    from jsonschema.exceptions import ValidationError

    def pattern(
        checker: Draft202012Validator, regex: str, instance: Any, node: Any
    ) -> Iterator[ValidationError]:
        if checker.is_type(instance, "string") and not ecma_regex(regex).search(instance):
            yield ValidationError(f"{instance!r} does not match {regex!r}")

    types = Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": lambda _, value: is_integer(value), "number": lambda _, value: is_number(value)}
    )
    strict = validators.extend(  # type: ignore[no-untyped-call]
        Draft202012Validator, validators={"pattern": pattern}, type_checker=types
    )
    made: Draft202012Validator = strict(schema())
    return made


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else str(step)
    return out


class Problem:
    """One schema problem: where (path, whether the key itself), what, and a hint."""

    __slots__ = ("hint", "key", "message", "path")

    def __init__(self, path: list[str | int], message: str, hint: str = "", key: bool = False):
        self.path = path
        self.message = message
        self.hint = hint
        self.key = key


@functools.cache
def _fast_check() -> Check | None:
    try:
        return compile_schema(schema())
    except Unsupported:
        return None


def problems(instance: Any) -> list[Problem]:
    """Every schema problem of one manifest document, most relevant first per location.

    A valid document is recognized by the compiled fast check alone; jsonschema is imported
    and run only to explain an invalid one.
    """
    check = _fast_check()
    if check is not None and check(instance):
        return []
    found: list[Problem] = []
    for error in validator().iter_errors(instance):
        found.extend(_explain(error))
    found.sort(key=lambda p: [str(s) for s in p.path])
    return found


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _example_hint(schema_node: Any, value: Any = None) -> str:
    if isinstance(value, datetime.date):
        return "YAML reads an unquoted date as a date: quote it"
    if isinstance(schema_node, dict):
        examples = schema_node.get("examples")
        if examples:
            return f"example: {_short(examples[0])}"
    return ""


_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "null",
}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else type(value).__name__


def _alternatives(schema_node: dict[str, Any]) -> list[str]:
    words: list[str] = []
    for branch in schema_node.get("oneOf", []) + schema_node.get("anyOf", []):
        branch = resolve(branch)
        if "const" in branch:
            words.append(_short(branch["const"]))
        elif "enum" in branch:
            words.append("one of " + ", ".join(_short(v) for v in branch["enum"]))
        else:
            kinds = branch.get("type", [])
            for kind in [kinds] if isinstance(kinds, str) else kinds:
                if _TYPE_WORDS.get(kind) not in words:
                    words.append(_TYPE_WORDS.get(kind, kind))
    return words


def resolve(node: Any) -> dict[str, Any]:
    """A schema node with a local ``$ref`` replaced by its target (siblings win)."""
    if isinstance(node, dict) and "$ref" in node and node["$ref"].startswith("#/$defs/"):
        target: dict[str, Any] = schema()["$defs"][node["$ref"].split("/")[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node if isinstance(node, dict) else {}


def _explain(error: ValidationError) -> Iterator[Problem]:
    path = list(error.absolute_path)
    kind = error.validator
    value = error.instance
    node = resolve(error.schema)
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = sorted(node.get("properties", {}))
        for extra in sorted(set(value) - set(allowed), key=str):
            hint = did_you_mean(str(extra), allowed)
            if not hint:
                hint = "allowed: " + ", ".join(allowed)
            yield Problem([*path, extra], "unknown key", hint, key=True)
    elif kind == "required":
        missing = _missing(error)
        hint = _example_hint(resolve(node.get("properties", {}).get(missing)))
        yield Problem(path, f"missing required key {missing!r}", hint)
    elif kind == "enum":
        choices = [str(v) for v in _argument(error)]
        hint = did_you_mean(str(value), choices)
        yield Problem(
            path, f"invalid value {_short(value)}: expected one of {', '.join(choices)}", hint
        )
    elif kind == "const":
        yield Problem(path, f"must be {_short(_argument(error))}, not {_short(value)}")
    elif kind == "type":
        expected = _argument(error)
        expected = [expected] if isinstance(expected, str) else expected
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in expected)
        got = _TYPE_WORDS.get(_type_name(value), _type_name(value))
        hint = _example_hint(node, value)
        if isinstance(value, float) and not math.isfinite(value):
            spelled = ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf")
            message = f"expected {words}, got {spelled}: NaN and infinity are refused"
        elif isinstance(value, float) and value.is_integer() and "integer" in expected:
            message = f"expected {words}, got the decimal number {_short(value)}"
            hint = f"write {int(value)}, without the decimal point"
        else:
            message = f"expected {words}, got {got} {_short(value)}"
        yield Problem(path, message, hint)
    elif kind in ("oneOf", "anyOf"):
        yield from _explain_alternatives(error, path, node)
    elif kind == "pattern" and "x-message" in node:
        yield Problem(
            path, f"invalid value {_short(value)}: {node['x-message']}", _example_hint(node)
        )
    elif kind == "pattern":
        yield Problem(
            path,
            f"invalid value {_short(value)}: does not match {_argument(error)}",
            _example_hint(node),
        )
    elif kind == "propertyNames":
        yield Problem(path, f"invalid key in {format_path(path) or 'document'}: {error.message}")
    else:
        yield Problem(path, f"invalid value {_short(value)}: {_plain(error)}", _example_hint(node))


def _argument(error: ValidationError) -> Any:
    """The keyword's value in the schema (e.g. the enum's choices)."""
    return error.validator_value


def _missing(error: ValidationError) -> str:
    """The key a ``required`` error is about: jsonschema reports one error per missing key."""
    instance = error.instance if isinstance(error.instance, dict) else {}
    for name in _argument(error):
        if repr(name) == error.message.split(" is a required property", 1)[0]:
            return str(name)
    for name in _argument(error):
        if name not in instance:
            return str(name)
    return str(_argument(error)[0])


def _plain(error: ValidationError) -> str:
    message = error.message
    for prefix in (repr(error.instance) + " ", _short(error.instance) + " "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _explain_alternatives(
    error: ValidationError, path: list[str | int], node: dict[str, Any]
) -> Iterator[Problem]:
    """The most relevant message for a failed ``oneOf``/``anyOf``.

    The branch whose own type fits the value and that has the fewest problems wins; a missing
    required key (the branch's discriminator) weighs more than any other problem. When the value
    fits no branch's type, say which alternatives there are.
    """
    by_branch: dict[int, list[ValidationError]] = {}
    for sub in error.context or []:
        branch = sub.relative_schema_path[0]
        by_branch.setdefault(int(branch), []).append(sub)
    value = error.instance
    if not error.context:  # valid under several branches of a oneOf
        wanted = node.get("type")
        if isinstance(wanted, str) and _type_name(value) != wanted:
            return  # the "type" error at this path already says what is wrong
        yield Problem(path, f"ambiguous value {_short(value)}: it matches several alternatives")
        return
    branches = node.get(str(error.validator), [])

    def type_fits(index: int) -> bool:
        wanted = resolve(branches[index]).get("type") if index < len(branches) else None
        if wanted is None:
            return not any(
                e.validator in ("type", "const", "enum") and not e.relative_path
                for e in by_branch.get(index, [])
            )
        wanted = [wanted] if isinstance(wanted, str) else wanted
        got = _type_name(value)
        return got in wanted or (got == "integer" and "number" in wanted)

    fitting = [i for i in by_branch if type_fits(i)]
    if not fitting:
        words = _alternatives(node)
        hint = _example_hint(node, value)
        if isinstance(value, float) and value.is_integer() and "an integer" in words:
            hint = f"write {int(value)}, without the decimal point"
        yield Problem(path, f"invalid value {_short(value)}: expected {' or '.join(words)}", hint)
        return
    if isinstance(value, dict):
        satisfied = [i for i in fitting if not any(e.validator == "required" for e in by_branch[i])]
        if len(satisfied) > 1:
            keys = [resolve(branches[i]).get("required", ["?"])[0] for i in satisfied]
            yield Problem(path, "give only one of " + ", ".join(repr(k) for k in keys))
            return
        # A branch whose first required key (its discriminator) is present explains best.
        keyed = [i for i in fitting if resolve(branches[i]).get("required", [None])[0] in value]
        if len(keyed) == 1:
            for sub in by_branch[keyed[0]]:
                yield from _explain(sub)
            return
        if not satisfied and all(
            not e.relative_path for i in fitting for e in by_branch[i] if e.validator == "required"
        ):
            keys = [resolve(branches[i]).get("required", ["?"])[0] for i in fitting]
            yield Problem(
                path,
                "needs one of the keys " + ", ".join(repr(k) for k in keys),
                _example_hint(node),
            )
            return

    def weight(index: int) -> tuple[int, int]:
        errors = by_branch[index]
        return (
            sum(10 if e.validator == "required" else 1 for e in errors),
            -max(len(e.path) for e in errors),
        )

    best = min(fitting, key=weight)
    for sub in by_branch[best]:
        yield from _explain(sub)
