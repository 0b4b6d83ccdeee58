"""The YAML rules and bounds of every file the tool reads as data: a strict safe loader (no
duplicate or non-string keys, no tag beyond plain data, no integer too long to print) and the
bounds a document must keep (values counted with aliases expanded, nesting depth), checked on the
parser's events before anything recursive sees the text.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

#: Largest number of values (scalars, lists, mappings) a document may hold, counted once its
#: aliases are expanded (billion laughs). A real manifest holds a few hundred.
MAX_NODES = 50_000
#: Deepest nesting of lists and mappings in a document, counted once its aliases are expanded.
#: A real manifest nests a handful of levels; composing YAML nodes, and every later check of the
#: data, recurse once per level, so deeper input is refused before either sees it.
MAX_DEPTH = 100

_TYPE_WORDS = {bool: "a boolean", int: "an integer", float: "a number", type(None): "null"}


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    if not isinstance(node, yaml.MappingNode):  # a "!!map" tag on a scalar or a list
        raise _unconstructable(node, TypeError())
    loader.flatten_mapping(node)
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=False)
        if not isinstance(key, str):
            what = _TYPE_WORDS.get(type(key), "a " + type(key).__name__)
            hint = (
                f" (quote it: '{key_node.value}')" if isinstance(key_node, yaml.ScalarNode) else ""
            )
            raise yaml.constructor.ConstructorError(
                None, None, f"a mapping key must be a string, not {what}{hint}", key_node.start_mark
            )
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=False)
    return mapping


#: Largest integer a manifest may hold, in decimal digits: Python refuses to print (so to report,
#: hash or store) much longer ones, whatever base the YAML wrote them in.
MAX_INT_DIGITS = 4000
_MAX_INT_BITS = int(MAX_INT_DIGITS * 3.3219)  # log2(10): an int of this many bits prints
#: What a scalar tag's value is read as, for the message when it can't be.
_TAG_WORDS = {
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "null": "null",
    "timestamp": "a date",
    "str": "a string",
    "map": "a mapping",
    "seq": "a list",
}


def _unconstructable(node: yaml.Node, exc: Exception) -> yaml.constructor.ConstructorError:
    """The diagnostic for a value YAML itself can't build (``!!int "abc"``, ``2024-13-45``, an
    integer too long to print): at the value's position, saying what it was read as."""
    tag = node.tag.replace("tag:yaml.org,2002:", "")
    word = _TAG_WORDS.get(tag, f"!!{tag}")
    text = node.value if isinstance(node, yaml.ScalarNode) else ""
    shown = repr(text) if len(text) <= 40 else repr(text[:37]) + "..."
    if tag == "int" and (isinstance(exc, OverflowError) or "digits" in str(exc)):
        message = f"integer too large: over {MAX_INT_DIGITS} digits"
    elif tag == "timestamp" and isinstance(exc, ValueError) and len(str(exc)) <= 60:
        message = f"not a valid date or time {shown}: {exc} (quote it to keep it as text)"
    elif isinstance(node, yaml.ScalarNode):
        message = f"cannot read {shown} as {word} (YAML tag '!!{tag}')"
    else:
        kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
        message = f"a {kind} cannot be read as {word} (YAML tag '!!{tag}')"
    return yaml.constructor.ConstructorError(None, None, message, node.start_mark)


def _refuse_tag(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    raise yaml.constructor.ConstructorError(
        None, None, f"unsupported YAML tag {tag!r}: manifests hold plain data only", node.start_mark
    )


def strict_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """A safe loader on ``base`` (libyaml's or the pure Python one) that rejects duplicate and
    non-string mapping keys and every tag that is not plain data, with a resolver cache."""

    class StrictLoader(base):  # type: ignore[misc,valid-type]
        #: Implicit tags of plain scalars seen before (the same keys recur in every manifest).
        _resolved: dict[str, str] = {}  # noqa: RUF012 (shared on purpose)

        def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
            # For a plain scalar the implicit tag depends on its text alone (no path resolvers).
            if kind is yaml.ScalarNode and implicit[0] and len(value) <= 64:
                tag = self._resolved.get(value)
                if tag is None:
                    tag = super().resolve(kind, value, implicit)
                    if len(self._resolved) < 10_000:
                        self._resolved[value] = tag
                return tag
            return super().resolve(kind, value, implicit)

        def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
            # A value YAML can't build (``!!int "abc"``, ``2024-13-45``, ``!!bool maybe``)
            # makes PyYAML raise a plain Python error: report it at the value, as YAML's own.
            try:
                data = super().construct_object(node, deep)
            except yaml.YAMLError:
                raise
            except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
                raise _unconstructable(node, exc) from None
            if type(data) is int and data.bit_length() > _MAX_INT_BITS:
                raise _unconstructable(node, OverflowError())
            return data

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    # Safe, but not JSON data: bytes, sets, ordered pairs.
    for tag in ("binary", "set", "omap", "pairs"):
        StrictLoader.add_constructor(f"tag:yaml.org,2002:{tag}", _refuse_tag)
    return StrictLoader


def expanded_size(root: Any, limit: int) -> int | None:
    """Node count of ``root`` with aliases expanded, or None for a recursive structure.

    Shared sub-structures (YAML aliases) are counted once per reference without walking them
    again, so this is linear in the number of distinct nodes even for billion-laughs input.
    """
    sizes: dict[int, int] = {}
    on_stack: set[int] = set()
    # Iterative post-order walk; a container is sized once all its children are.
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, done = stack.pop()
        if not isinstance(obj, (dict, list)):
            continue
        oid = id(obj)
        children = list(obj.values()) if isinstance(obj, dict) else obj
        if done:
            on_stack.discard(oid)
            total = 1
            for child in children:
                total += sizes.get(id(child), 1) if isinstance(child, (dict, list)) else 1
            sizes[oid] = min(total, limit + 1)
            continue
        if oid in sizes:
            continue
        if oid in on_stack:
            return None
        on_stack.add(oid)
        stack.append((obj, True))
        for child in children:
            if isinstance(child, (dict, list)):
                if id(child) in on_stack:
                    return None
                stack.append((child, False))
    return sizes.get(id(root), 1)


_BREAK = "[\n\r\x85\u2028\u2029]"
#: What may stand before the first token of a block list or mapping on its line: indentation
#: (libyaml also skips tabs and byte order marks there) and compact "- ", "? ", ": " indicators.
_BLOCK_PREFIX = "[ \t\ufeff?:-]"
_deep_lines: dict[int, tuple[re.Pattern[str], re.Pattern[str]]] = {}


def may_nest_deeper(text: str, limit: int) -> bool:
    """Whether ``text`` could nest lists and mappings over ``limit`` deep: a cheap upper bound,
    never wrong that way (aliases aside), so only a file it flags needs :func:`_scan`.

    Flow collections on one path open with their own "[" or "{", or are a one-pair mapping right
    inside a "[": at most 2 * "[" + "{" of them. Block collections come above them on a path,
    and nest by column: each starts to the right of the one holding it, except a list at the
    indentation of its mapping's keys, so two at most start at any one column; and one starts only
    after its line's indentation and compact indicators. So if no line starts with ``k`` of
    those characters, blocks nest at most 2 * ``k`` deep.
    """
    flow = 2 * text.count("[") + text.count("{")
    columns = (limit - flow) // 2
    if columns < 1:
        return True
    patterns = _deep_lines.get(columns)
    if patterns is None:
        prefix = f"{_BLOCK_PREFIX}{{{columns}}}"
        # The first line, and the others (faster than one pattern with "\A|").
        patterns = _deep_lines[columns] = (re.compile(prefix), re.compile(_BREAK + prefix))
    return bool(patterns[0].match(text) or patterns[1].search(text))


def scan_events(text: str, loader: type[yaml.SafeLoader]) -> tuple[str, int, int] | None:
    count = 0
    heights: list[int] = []  # per open collection: the height of its tallest child so far
    open_anchors: list[str | None] = []
    anchored: dict[str, int] = {}  # height of each anchored collection, for its aliases
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.ScalarEvent):
            count += 1
        elif isinstance(event, yaml.CollectionStartEvent):
            count += 1
            if len(heights) >= MAX_DEPTH:
                return too_deep(event.start_mark, "")
            heights.append(0)
            open_anchors.append(event.anchor)
        elif isinstance(event, yaml.CollectionEndEvent):
            height = heights.pop() + 1
            anchor = open_anchors.pop()
            if anchor is not None:
                anchored[anchor] = height
            if heights and height > heights[-1]:
                heights[-1] = height
        elif isinstance(event, yaml.AliasEvent):
            height = anchored.get(event.anchor or "", 0)
            if len(heights) + height > MAX_DEPTH:
                return too_deep(event.start_mark, " once aliases are expanded")
            if heights and height > heights[-1]:
                heights[-1] = height
        elif isinstance(event, yaml.DocumentStartEvent):
            anchored.clear()
        if count > MAX_NODES:
            return f"too many values: over {MAX_NODES} in one file", 1, 1
    return None


def too_deep(mark: Any, why: str) -> tuple[str, int, int]:
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    return f"nesting too deep: over {MAX_DEPTH} levels of lists and mappings{why}", line, column
