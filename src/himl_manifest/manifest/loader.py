"""Safe YAML loading of manifest files, with bounds, and source positions computed on demand.

Loading is the fast path: libyaml (``CSafeLoader``) builds plain Python data, rejecting duplicate
keys and every tag that is not plain data. Source positions cost a second parse, so they are
computed only when a diagnostic needs one (:meth:`LoadedFile.position`).

Hostile or broken input never raises: it becomes one :class:`Diagnostic` for the file. The bounds
(:data:`MAX_FILE_BYTES`, :data:`MAX_NODES`, :data:`MAX_DEPTH`) are checked before the text is
composed into nodes, since composing (and, in pure Python, constructing) recurses once per level
of nesting: whatever the libyaml build, or without libyaml, deep input never reaches it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.manifest.yaml_bounds import (
    MAX_DEPTH,
    MAX_NODES,
    expanded_size,
    may_nest_deeper,
    scan_events,
    strict_loader,
    too_deep,
)

#: Largest manifest file read, in bytes. Bounds time and memory on hostile input.
MAX_FILE_BYTES = 256 * 1024
#: Files larger than this are counted (cheaply, by the parser's events) before they are
#: built into Python data, so a big file is refused in bounded time.
_PRESCAN_BYTES = 32 * 1024
#: File name endings of manifests found in a folder.
MANIFEST_SUFFIXES = (".yaml", ".yml")

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

#: The loader of manifests: libyaml's where PyYAML was built with it (tests swap in the pure
#: Python one, with ``_Loader``, to cover both).
_StrictLoader = strict_loader(_Loader)


@dataclass
class Document:
    """One YAML document of a manifest file, as plain data."""

    file: LoadedFile
    index: int
    data: Any


@dataclass
class LoadedFile:
    """A manifest file: its documents, or the one diagnostic that stopped its loading."""

    path: Path
    display: str
    text: str = ""
    documents: list[Document] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    _nodes: list[yaml.Node | None] | None = field(default=None, repr=False)
    #: Per mapping node (by id; :attr:`_nodes` keeps them alive): its scalar keys, each with
    #: its key and value nodes, so that locating many problems in one file stays linear.
    _keys: dict[int, dict[str, tuple[yaml.Node, yaml.Node]]] = field(
        default_factory=dict, repr=False
    )

    def error(self, message: str, line: int = 0, column: int = 0, code: str = "load") -> None:
        self.diagnostics.append(Diagnostic(self.display, line, column, "", message, code=code))

    def position(
        self, index: int, path: Sequence[str | int], *, key: bool = False
    ) -> tuple[int, int]:
        """1-based (line, column) of ``path`` in document ``index``: the deepest node found.

        With ``key=True`` and a path ending in a mapping key, the key itself is located.
        """
        if self._nodes is None:
            try:
                self._nodes = list(yaml.compose_all(self.text, Loader=_Loader))
            except (yaml.YAMLError, RecursionError, MemoryError):
                self._nodes = []
        if index >= len(self._nodes) or self._nodes[index] is None:
            return (1, 1)
        node = self._nodes[index]
        assert node is not None
        mark = node.start_mark
        for step_no, step in enumerate(path):
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                found = self._mapping_keys(node).get(str(step))
                if found is not None:
                    key_node, value_node = found
                    last = step_no == len(path) - 1
                    mark = key_node.start_mark
                    child = key_node if (key and last) else value_node
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(step, int)
                and 0 <= step < len(node.value)
            ):
                child = node.value[step]
            if child is None:
                break
            node = child
            mark = node.start_mark
        return (mark.line + 1, mark.column + 1)

    def _mapping_keys(self, node: yaml.MappingNode) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        keys = self._keys.get(id(node))
        if keys is None:
            keys = self._keys[id(node)] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    keys.setdefault(key_node.value, (key_node, value_node))
        return keys


def _yaml_error(loaded: LoadedFile, exc: yaml.YAMLError) -> None:
    if isinstance(exc, yaml.reader.ReaderError) and isinstance(exc.character, int):
        # A character YAML refuses anywhere (a control character, U+FFFE): its offset is in bytes
        # with libyaml, in characters without it, so find the character itself.
        index = loaded.text.find(chr(exc.character))
        start = loaded.text.rfind("\n", 0, index) + 1
        line, column = (loaded.text.count("\n", 0, index) + 1, index - start + 1)
        loaded.error(
            f"character U+{exc.character:04X} is not allowed in YAML text "
            f"(in a double-quoted string, write it as \\u{exc.character:04x})",
            *((line, column) if index >= 0 else (0, 0)),
            code="yaml",
        )
        return
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
    problem = getattr(exc, "problem", None) or str(exc)
    if isinstance(exc, yaml.constructor.ConstructorError) and "constructor for the tag" in problem:
        tag = problem.split("tag", 1)[1].strip(" '")
        tag = tag.replace("tag:yaml.org,2002:", "!!")
        problem = f"unsupported YAML tag {tag!r}: manifests hold plain data only"
    elif ("tab" in problem or "cannot start any token" in problem) and _char_at(
        loaded.text, line, column
    ) == "\t":
        problem = "tab character: YAML indentation must use spaces"
    elif "recursive node" in problem:
        problem = "recursive alias: a value that contains itself is refused"
    context = getattr(exc, "context", None)
    if problem.startswith(("unsupported", "tab", "duplicate", "a mapping", "recursive")) or (
        problem.startswith(("integer too large", "not a valid date", "cannot read", "a list"))
    ):
        pass
    elif context and "while" in context:
        problem = f"YAML syntax error: {problem} ({context})"
    else:
        problem = f"YAML syntax error: {problem}"
    loaded.error(problem, line, column, code="yaml")


def _char_at(text: str, line: int, column: int) -> str:
    """The character at a 1-based position, or at the start of that line's indentation."""
    lines = text.splitlines()
    if not 0 < line <= len(lines):
        return ""
    text_line = lines[line - 1]
    if 0 < column <= len(text_line) and text_line[column - 1] == "\t":
        return "\t"
    indent = text_line[: len(text_line) - len(text_line.lstrip(" \t"))]
    return "\t" if "\t" in indent else (text_line[column - 1 : column] if column > 0 else "")


def _decode(loaded: LoadedFile, raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        loaded.error(
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} cannot be decoded",
            line,
            column,
            code="encoding",
        )
        return None
    return text.removeprefix("\ufeff")


#: YAML (libyaml and PyYAML) breaks lines at any of these, not only at "\n".
def _scan(text: str) -> tuple[str, int, int] | None:
    """The first bound ``text`` breaks, with its 1-based line and column, or None.

    Walks the parser's events, which (unlike composing nodes) takes no recursion: at most
    :data:`MAX_NODES` values (aliases not expanded: :func:`expanded_size` counts those) and
    :data:`MAX_DEPTH` levels of lists and mappings, aliases expanded. Stops at the first excess.
    """
    try:
        return scan_events(text, _Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is None or "maximum nesting depth" not in str(getattr(exc, "problem", "")):
            raise
    # libyaml (0.2.5 on) refuses 1000 open flow levels while it looks ahead for a key, before
    # it hands over their events: the pure Python parser finds the same first level too deep in
    # the text up to there, so every build reports one place.
    with contextlib.suppress(yaml.YAMLError):
        found = scan_events(text[: mark.index], yaml.SafeLoader)
        if found is not None:
            return found
    return too_deep(mark, "")


def _read(loaded: LoadedFile) -> bytes | None:
    path = loaded.path
    try:
        info = os.stat(path)
    except OSError as exc:
        if path.is_symlink() and exc.errno == errno.ENOENT:
            target = os.readlink(path)
            loaded.error(f"broken symbolic link: its target {target!r} does not exist", code="io")
        elif exc.errno == errno.ELOOP:
            loaded.error("symbolic link loop: the link never reaches a file", code="io")
        else:
            loaded.error(f"cannot read file: {exc.strerror or exc}", code="io")
        return None
    if stat.S_ISDIR(info.st_mode):
        loaded.error("a folder, not a manifest file", code="io")
        return None
    if not stat.S_ISREG(info.st_mode):  # a FIFO or a device would block or never end
        loaded.error("not a regular file (a pipe, socket or device?)", code="io")
        return None
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        loaded.error(f"cannot read file: {exc.strerror or exc}", code="io")
        return None
    if len(raw) > MAX_FILE_BYTES:
        loaded.error(
            f"file too large: over {MAX_FILE_BYTES // 1024} KiB (a manifest is a few KB)", code="io"
        )
        return None
    return raw


def load_file(path: Path, display: str | None = None) -> LoadedFile:
    """Read and parse one manifest file; problems become diagnostics, never exceptions."""
    loaded = LoadedFile(path=path, display=display if display is not None else str(path))
    raw = _read(loaded)
    if raw is None:
        return loaded
    text = _decode(loaded, raw)
    if text is None:
        return loaded
    loaded.text = text
    if "\x00" in text:
        position = text.index("\x00")
        line = text.count("\n", 0, position) + 1
        loaded.error("NUL character: not a text file", line, 1, code="encoding")
        return loaded
    try:
        _parse(loaded, big=len(raw) > _PRESCAN_BYTES)
    except (RecursionError, MemoryError) as exc:  # the bounds should make this unreachable
        loaded.documents.clear()
        loaded.diagnostics.clear()
        why = "nesting too deep" if isinstance(exc, RecursionError) else "too large"
        loaded.error(f"YAML {why}: the YAML library gave up ({type(exc).__name__})", code="yaml")
    if not loaded.documents and not loaded.diagnostics:
        loaded.error("empty file: no manifest in it", 1, 1, code="empty")
    return loaded


def _parse(loaded: LoadedFile, *, big: bool) -> None:
    """Parse ``loaded.text`` into documents (or one diagnostic), within the bounds."""
    text = loaded.text
    try:
        # Scan the events first where a bound might be broken: a big file, a file that might
        # nest too deep, or one with aliases (an alias can deepen what holds it).
        aliases = "*" in text and "&" in text
        if big or aliases or may_nest_deeper(text, MAX_DEPTH):
            # A YAML error found here is left for loading to report, in its words (it stops
            # there too, so nothing deeper than the bounds is composed).
            with contextlib.suppress(yaml.YAMLError):
                refused = _scan(text)
                if refused is not None:
                    loaded.error(*refused, code="yaml")
                    return
        datas = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as exc:
        _yaml_error(loaded, exc)
        return
    for index, data in enumerate(datas):
        if data is None:
            continue
        # Without an alias ("*name") the text bounds the size; otherwise count the expansion.
        size = expanded_size(data, MAX_NODES) if "*" in text else 0
        if size is None or size > MAX_NODES:
            line, column = loaded.position(index, [])
            if size is None:
                why = "recursive alias: a value that contains itself is refused"
            else:
                why = f"aliases expand to too many values: refused (limit {MAX_NODES})"
            loaded.error(why, line, column, "yaml")
            continue
        loaded.documents.append(Document(loaded, index, data))


def discover(
    paths: Iterable[Path], *, allow_empty: bool = False
) -> Iterator[tuple[Path, Diagnostic | None]]:
    """Manifest files under ``paths`` (files as given; folders searched recursively, sorted).

    Yields ``(path, None)`` per file, or ``(path, diagnostic)`` for a path that can't be used: a
    missing path, a folder with no manifests (unless ``allow_empty``: for plan and apply, an
    existing folder with no manifests left means no experiments are wanted), a symlink loop.
    """
    for root in paths:
        if root.is_dir():
            found = False
            for file in _walk(root):
                found = True
                yield file, None
            if not found and not allow_empty:
                yield (
                    root,
                    Diagnostic(
                        str(root),
                        0,
                        0,
                        "",
                        "no manifests (*.yaml, *.yml) in this folder",
                        code="io",
                    ),
                )
        elif root.exists() or root.is_symlink():
            yield root, None
        else:
            yield root, Diagnostic(str(root), 0, 0, "", "no such file or folder", code="io")


def _walk(root: Path) -> Iterator[Path]:
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop, or the same folder twice
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.endswith(MANIFEST_SUFFIXES) and not name.startswith("."):
                yield Path(dirpath) / name
