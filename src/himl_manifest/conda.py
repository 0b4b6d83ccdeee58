"""Conda environment files: read, pip includes inlined, and their meaning as a digest.

:func:`resolve_conda_file` reads a conda file, replaces every pip ``-r`` include by the
requirement lines of the file it names (relative to the file that names it, as pip does;
recursively; a file included twice is read once; a cycle is an error), and returns the
dictionary that Azure ML's ``Environment(conda_file=...)`` takes: Azure ML builds a job's image
from the conda file alone and never sees the repository, so the file has to be self-contained.
:func:`conda_environment` raises every problem as one :class:`~himl_manifest.errors.ConfigError`.

:func:`conda_digest` is what a cluster run's identity holds of its conda file: the sha256 of
the file's *meaning* (:func:`conda_meaning`), not of its bytes, so comments, blank lines, YAML
style and the order of dependencies never change a run's identity; the packages do.

Problems are :class:`~himl_manifest.diagnostics.Diagnostic` values naming the file and line.
What an image build cannot do is refused here, not in a failed image build minutes later:
constraints files (``-c``), editable installs (``-e``) and local paths (``.``, ``./pkg``,
``file:``), which name files the build does not have.

PyYAML and the standard library only: the spec layer (run identity) and the Azure ML backend
(:mod:`himl_manifest.backends.azureml.environment`) both read conda files through this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import ConfigError

#: The diagnostic code of every problem found here.
CODE = "environment"
_INCLUDE = re.compile(r"^(?:-r|--requirement)(?:\s*=\s*|\s+|(?=\S))(?P<file>\S.*)$")
_CONSTRAINT = re.compile(r"^(?:-c|--constraint)(?:\s*=\s*|\s+|(?=\S))")
_EDITABLE = re.compile(r"^(?:-e|--editable)(?:\s*=\s*|\s+|(?=\S))")
_LOCAL_PATH = re.compile(r"^(?:\.{1,2}(?:[/\\]|$)|/|~|file:)")
#: A pip comment: ``#`` at the start of a line or after whitespace (pip's own rule).
_COMMENT = re.compile(r"(^|\s+)#.*$")


@dataclass
class ResolvedConda:
    """A conda file with its pip includes inlined, and what was wrong with it."""

    path: Path
    #: The conda environment as a dictionary (None when the file could not be read at all).
    data: dict[str, Any] | None
    #: Every file read: the conda file, then the included requirements files.
    files: list[Path] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)

    @property
    def pip_requirements(self) -> list[str]:
        """The pip lines of the resolved environment."""
        return list(_pip_section(self.data) or []) if self.data else []


def display_path(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` (POSIX separators) when inside it, else as given."""
    if root is not None:
        try:
            return path.resolve().relative_to(root.resolve()).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def resolve_conda_file(path: Path, *, root: Path | None = None) -> ResolvedConda:
    """Read the conda file ``path`` and inline its pip ``-r`` includes (see the module doc).

    ``root`` only shortens the file names in diagnostics."""
    resolved = ResolvedConda(path=path, data=None, files=[path])
    shown = display_path(path, root)

    def problem(line: int, message: str, hint: str = "", where: str = "") -> None:
        resolved.problems.append(
            Diagnostic(shown, line, 1 if line else 0, where, message, hint, CODE)
        )

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        problem(0, f"cannot read the conda file: {exc}")
        return resolved
    data, pip_lines, problems = _parse_conda(text, shown)
    resolved.problems.extend(problems)
    if data is None:
        return resolved
    resolved.data = data
    if pip_lines is None:
        return resolved
    seen = {path.resolve()}
    out: list[str] = []
    for entry, line in pip_lines:
        out.extend(
            _expand_line(
                entry,
                path,
                line,
                shown,
                stack=[path.resolve()],
                seen=seen,
                into=resolved,
                root=root,
            )
        )
    _set_pip_section(data, out)
    return resolved


def conda_environment(path: Path, *, root: Path | None = None) -> dict[str, Any]:
    """The resolved conda dictionary of ``path``; :class:`ConfigError` listing every problem."""
    resolved = resolve_conda_file(path, root=root)
    errors = [d for d in resolved.problems if d.severity != "warning"]
    if errors or resolved.data is None:
        lines = [
            f"{d.location()}: {d.message}" + (f" ({d.hint})" if d.hint else "") for d in errors
        ]
        raise ConfigError("conda file problems:\n" + "\n".join(lines or [str(path)]))
    return resolved.data


# --- the conda file --------------------------------------------------------------------------


def _parse_conda(
    text: str, shown: str
) -> tuple[dict[str, Any] | None, list[tuple[str, int]] | None, list[Diagnostic]]:
    """The conda document, its pip entries with their line numbers, and its problems."""
    import yaml

    problems: list[Diagnostic] = []
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problems.append(
            Diagnostic(shown, line, 1 if line else 0, "", f"not valid YAML: {exc}", "", CODE)
        )
        return None, None, problems
    if not isinstance(data, dict):
        problems.append(
            Diagnostic(
                shown, 1, 1, "", "a conda file must be a mapping with `dependencies`", "", CODE
            )
        )
        return None, None, problems
    dependencies = data.get("dependencies")
    if dependencies is None:
        return data, None, problems
    if not isinstance(dependencies, list):
        problems.append(
            Diagnostic(shown, 0, 0, "dependencies", "`dependencies` must be a list", "", CODE)
        )
        return None, None, problems
    pip_node = _pip_node(node)
    pip = _pip_section(data)
    if pip is None:
        return data, None, problems
    if not isinstance(pip, list) or pip_node is None:
        problems.append(
            Diagnostic(shown, 0, 0, "dependencies.pip", "the pip section must be a list", "", CODE)
        )
        return None, None, problems
    entries: list[tuple[str, int]] = []
    for item_node, item in zip(pip_node.value, pip, strict=False):
        entries.append((str(item), item_node.start_mark.line + 1))
    return data, entries, problems


def _pip_section(data: dict[str, Any] | None) -> Any:
    for dependency in (data or {}).get("dependencies") or []:
        if isinstance(dependency, dict) and "pip" in dependency:
            return dependency["pip"]
    return None


def _set_pip_section(data: dict[str, Any], lines: list[str]) -> None:
    for dependency in data.get("dependencies") or []:
        if isinstance(dependency, dict) and "pip" in dependency:
            dependency["pip"] = lines
            return


def _pip_node(node: Any) -> Any:
    """The YAML sequence node of ``dependencies: [..., {pip: [...]}]`` (for line numbers)."""
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return None
    for key, value in node.value:
        if key.value == "dependencies" and isinstance(value, yaml.SequenceNode):
            for item in value.value:
                if isinstance(item, yaml.MappingNode):
                    for item_key, item_value in item.value:
                        if item_key.value == "pip" and isinstance(item_value, yaml.SequenceNode):
                            return item_value
    return None


# --- requirement lines -----------------------------------------------------------------------


def _expand_line(
    entry: str,
    origin: Path,
    line: int,
    shown: str,
    *,
    stack: list[Path],
    seen: set[Path],
    into: ResolvedConda,
    root: Path | None,
) -> list[str]:
    """One pip line of ``origin`` (at ``line``) -> the requirement lines it stands for."""
    text = entry.strip()

    def problem(message: str, hint: str = "") -> list[str]:
        into.problems.append(Diagnostic(shown, line, 1, "", message, hint, CODE))
        return []

    include = _INCLUDE.match(text)
    if include:
        target = (origin.parent / include.group("file").strip()).resolve()
        if target in stack:
            chain = " -> ".join(display_path(p, root) for p in [*stack, target])
            return problem(f"requirements include cycle: {chain}")
        if target in seen:
            return []  # included already: its lines are in the environment once
        if not target.is_file():
            return problem(
                f"included requirements file not found: {display_path(target, root)}",
                f"`-r` paths are relative to {display_path(origin.parent, root) or '.'}",
            )
        seen.add(target)
        into.files.append(target)
        return _expand_file(target, stack=[*stack, target], seen=seen, into=into, root=root)
    if _CONSTRAINT.match(text):
        return problem(
            "constraints files (-c) cannot be used in an Azure ML environment",
            "pin the versions in the requirements instead",
        )
    if _EDITABLE.match(text) or _LOCAL_PATH.match(text):
        return problem(
            f"{text!r} installs from a local path, which the Azure ML image build cannot see",
            "install a published version, a git URL, or let the code snapshot carry it",
        )
    return [text]


def _expand_file(
    path: Path, *, stack: list[Path], seen: set[Path], into: ResolvedConda, root: Path | None
) -> list[str]:
    shown = display_path(path, root)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        into.problems.append(Diagnostic(shown, 0, 0, "", f"cannot read: {exc}", "", CODE))
        return []
    out: list[str] = []
    for line, logical in _logical_lines(text):
        out.extend(
            _expand_line(logical, path, line, shown, stack=stack, seen=seen, into=into, root=root)
        )
    return out


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """A requirements file's lines, joined at trailing backslashes, comments and blanks
    dropped, each with the number of the line it starts on (pip's reading)."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if raw.endswith("\\") and not _COMMENT.search(raw[:-1]):
            pending += raw[:-1]
            continue
        logical = _COMMENT.sub("", pending + raw).strip()
        pending = ""
        if logical:
            out.append((start, logical))
    tail = _COMMENT.sub("", pending).strip()
    if tail:
        out.append((start, tail))
    return out


# --- meaning and digest ----------------------------------------------------------------------

#: Keys of a conda file that do not change what is installed: the environment's name and the
#: folder it would be created in on someone's machine.
_NOT_MEANING = frozenset({"name", "prefix"})


def conda_meaning(data: dict[str, Any]) -> dict[str, Any]:
    """What a resolved conda environment installs, in one canonical shape.

    The conda dependencies and the pip requirement lines (includes already inlined) become two
    sorted lists without duplicates; ``channels`` keep their order (conda's channel priority
    follows it); ``name`` and ``prefix`` are left out; other keys are kept as they are.
    Comments, blank lines and YAML style are gone already: they are not part of parsed data.
    """
    meaning = {key: value for key, value in data.items() if key not in _NOT_MEANING}
    dependencies = data.get("dependencies")
    if isinstance(dependencies, list):
        conda = {_spelled(item) for item in dependencies if not isinstance(item, dict)}
        meaning["dependencies"] = sorted(conda)
        pip = _pip_section(data)
        if isinstance(pip, list):
            meaning["pip"] = sorted({_spelled(line) for line in pip})
        others = [item for item in dependencies if isinstance(item, dict) and "pip" not in item]
        if others:
            meaning["dependency_mappings"] = others
    return meaning


def _spelled(item: Any) -> str:
    """One dependency as text, inner whitespace collapsed (``numpy >=1.2`` is ``numpy >=1.2``)."""
    return " ".join(str(item).split())


def conda_digest(path: Path | None) -> str | None:
    """sha256 of the meaning of the conda file ``path`` (None: no file).

    A file that is not a conda environment at all (not YAML, not a mapping) is digested by its
    bytes: it still has an identity, and pre-flight reports what is wrong with it."""
    import hashlib
    import json

    if path is None or not path.is_file():
        return None
    resolved = resolve_conda_file(path)
    if resolved.data is None:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    text = json.dumps(
        conda_meaning(resolved.data), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).hexdigest()
