"""What a class body declares, read from its syntax tree: its fields (annotations and
``self.x = ...`` in its setup methods), and whether it can be read statically at all (no
metaclass, no dynamic attributes, ``self`` never handed out during setup)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

#: Class decorators that change no field (anything else makes a class unreadable statically).
HARMLESS_DECORATORS = frozenset(
    {"dataclass", "dataclasses.dataclass", "final", "typing.final", "typing_extensions.final"}
)


@dataclass(frozen=True)
class StaticField:
    """A field as its source declares it: ``annotation`` is the annotation's source text (None
    for ``self.x = ...``); ``owner`` the qualified name of the declaring class."""

    name: str
    annotation: str | None
    owner: str
    line: int


class Unknown(Exception):
    """Something the static reading cannot follow: the class is unknown."""


def dotted_name(expr: ast.expr) -> str | None:
    """``a.b.C`` for a name or an attribute chain; None for anything else."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        head = dotted_name(expr.value)
        return f"{head}.{expr.attr}" if head else None
    return None


#: Methods whose attribute assignments make the fields a run's overrides meet.
_SETUP_METHODS = frozenset({"__init__", "__post_init__", "set_model_variant"})


def check_readable(node: ast.ClassDef) -> None:
    """Raise Unknown when the class may get fields its source does not show."""
    if node.keywords:  # metaclass=..., or keywords for __init_subclass__
        raise Unknown(f"{node.name}: class keywords")
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if dotted_name(target) not in HARMLESS_DECORATORS:
            raise Unknown(f"{node.name}: decorator {ast.unparse(decorator)}")
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and dotted_name(sub.func) in ("setattr", "vars"):
            raise Unknown(f"{node.name}: sets attributes dynamically")
        if isinstance(sub, ast.Attribute) and sub.attr == "__dict__":
            raise Unknown(f"{node.name}: uses __dict__")
    for method in class_statements(node.body):
        if isinstance(method, ast.FunctionDef) and method.name in _SETUP_METHODS:
            check_self_not_handed_out(node.name, method)


def check_self_not_handed_out(class_name: str, method: ast.FunctionDef) -> None:
    """A setup method that passes ``self`` to a function (``configure(self)``) may set fields
    there; calling a base class's ``__init__(self)`` is fine (its source is read too)."""
    if not method.args.args:
        return
    self_name = method.args.args[0].arg
    for sub in ast.walk(method):
        if not isinstance(sub, ast.Call):
            continue
        if isinstance(sub.func, ast.Attribute) and sub.func.attr in _SETUP_METHODS:
            continue
        arguments = [*sub.args, *(k.value for k in sub.keywords)]
        if any(isinstance(a, ast.Name) and a.id == self_name for a in arguments):
            raise Unknown(f"{class_name}.{method.name} hands self to {ast.unparse(sub.func)}")


def class_statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of a class body, those under ``if``/``try`` included."""
    yield from top_level(body)


def is_classvar(annotation: ast.expr) -> bool:
    text = ast.unparse(annotation).strip("'\"")
    return bool(re.match(r"^(typing\.)?ClassVar\b", text))


def declared_fields(node: ast.ClassDef, owner: str) -> Iterator[StaticField]:
    """The fields ``node`` declares: annotated class attributes, then ``self.x`` assignments."""
    for statement in class_statements(node.body):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and not statement.target.id.startswith("_")
            and not is_classvar(statement.annotation)
        ):
            annotation = ast.unparse(statement.annotation)
            yield StaticField(statement.target.id, annotation, owner, statement.lineno)
    for statement in class_statements(node.body):
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from self_assignments(statement, owner)


def self_assignments(
    function: ast.FunctionDef | ast.AsyncFunctionDef, owner: str
) -> Iterator[StaticField]:
    """``self.x = ...`` (also annotated, augmented, a ``for`` or ``with`` target) in a method."""
    args = function.args.posonlyargs + function.args.args
    if not args or any(
        isinstance(d, ast.Name) and d.id == "staticmethod" for d in function.decorator_list
    ):
        return
    self_name = args[0].arg
    for sub in ast.walk(function):
        annotation: str | None = None
        targets: list[ast.expr] = []
        if isinstance(sub, ast.Assign):
            targets = list(sub.targets)
        elif isinstance(sub, ast.AnnAssign):
            targets, annotation = [sub.target], ast.unparse(sub.annotation)
        elif isinstance(sub, ast.AugAssign | ast.For | ast.AsyncFor):
            targets = [sub.target]
        elif isinstance(sub, ast.With | ast.AsyncWith):
            targets = [item.optional_vars for item in sub.items if item.optional_vars is not None]
        for target in targets:
            for leaf in ast.walk(target):
                if (
                    isinstance(leaf, ast.Attribute)
                    and isinstance(leaf.value, ast.Name)
                    and leaf.value.id == self_name
                    and not leaf.attr.startswith("_")
                ):
                    yield StaticField(leaf.attr, annotation, owner, leaf.lineno)


def top_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, those under ``if``/``try`` included (not in functions)."""
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from top_level(node.body)
            yield from top_level(node.orelse)
        elif isinstance(node, ast.Try | ast.TryStar):
            for block in (node.body, node.orelse, node.finalbody):
                yield from top_level(block)
            for handler in node.handlers:
                yield from top_level(handler.body)
