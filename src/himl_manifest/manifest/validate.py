"""`himl validate` as a core function: paths in, diagnostics and valid documents out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.manifest import schema, semantic
from himl_manifest.manifest.loader import (
    MANIFEST_SUFFIXES,
    Document,
    LoadedFile,
    discover,
    load_file,
)
from himl_manifest.model import checkpoint_source


@dataclass
class ValidationResult:
    """What validating some paths found: files read, problems, and the valid documents."""

    files: list[LoadedFile] = field(default_factory=list)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No error (warnings leave the manifests valid)."""
        return not any(d.severity != "warning" for d in self.diagnostics)


def display_path(path: Path) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _diagnostic(
    doc: Document,
    path: list[str | int],
    message: str,
    hint: str,
    code: str,
    *,
    key: bool = False,
    severity: str = "error",
) -> Diagnostic:
    line, column = doc.file.position(doc.index, path, key=key)
    return Diagnostic(
        doc.file.display, line, column, schema.format_path(path), message, hint, code, severity
    )


def manifest_context(file: Path) -> list[Path]:
    """The manifests a file is validated with: the folder it belongs to.

    That is the top folder of its path below the current folder (``experiments/sub/x.yaml``
    -> ``experiments``; pre-commit runs hooks at the repository root, so this is the
    experiments folder). A file directly in the current folder, or outside it, has the
    manifest files beside it (not those of subfolders: the current folder may be a whole
    repository).
    """
    try:
        parts = Path(os.path.abspath(file)).relative_to(Path.cwd()).parts
    except ValueError:
        parts = ()
    if len(parts) > 1:
        return [Path(parts[0])]
    try:
        beside = sorted(file.parent.iterdir())
    except OSError:
        return []
    return [
        p
        for p in beside
        if p.name.endswith(MANIFEST_SUFFIXES) and not p.name.startswith(".") and p.is_file()
    ]


def validate_paths(
    paths: Iterable[Path], *, allow_empty: bool = False, context: Iterable[Path] = ()
) -> ValidationResult:
    """Load and validate every manifest under ``paths``; every problem of every file at once.

    ``context``: more manifests (files or folders) that the cross-file rules see (unique names,
    checkpoint references, cycles) but whose own problems are not reported; only their
    schema-valid documents count. A problem of a context document's checkpoint reference is
    reported when its chain of references reaches a document of ``paths`` (editing a file
    there broke it).
    """
    result = ValidationResult()
    seen: set[Path] = set()
    for path, problem in discover(paths, allow_empty=allow_empty):
        if problem is not None:
            result.diagnostics.append(problem)
            continue
        loaded = _load_once(path, seen)
        if loaded is None:
            continue
        result.files.append(loaded)
        result.diagnostics.extend(loaded.diagnostics)
        result.documents.extend(_schema_valid(loaded, result.diagnostics))
    background: list[Document] = []
    for path, problem in discover(context, allow_empty=True):
        loaded = _load_once(path, seen) if problem is None else None
        if loaded is not None:
            background.extend(_schema_valid(loaded, []))
    # the context first: a name used twice is reported on the given file, not on its sibling
    checked = [*background, *result.documents]
    given = {id(doc) for doc in result.documents}
    by_name: dict[str, Document] = {}
    for doc in checked:
        by_name.setdefault(doc.data["name"], doc)
    for finding in semantic.check(checked):
        if id(finding.document) not in given:
            if not _reaches(finding, given, by_name):
                continue
            if all(f is not finding.document.file for f in result.files):  # reported: counted
                result.files.append(finding.document.file)
        result.diagnostics.append(
            _diagnostic(
                finding.document,
                list(finding.path),
                finding.message,
                finding.hint,
                finding.code,
                key=finding.key,
                severity=finding.severity,
            )
        )
    result.diagnostics.sort(key=lambda d: (d.file, d.line, d.column, d.path))
    return result


def _load_once(path: Path, seen: set[Path]) -> LoadedFile | None:
    """The file loaded, or None when it was loaded already (under another path)."""
    real = Path(os.path.realpath(path))  # Path.resolve raises on a symlink loop
    if real in seen:
        return None
    seen.add(real)
    return load_file(path, display_path(path))


def _schema_valid(loaded: LoadedFile, diagnostics: list[Diagnostic]) -> list[Document]:
    """The file's schema-valid documents; the problems of the others go to ``diagnostics``."""
    valid = []
    for doc in loaded.documents:
        if not isinstance(doc.data, dict):
            kind = (
                "a list" if isinstance(doc.data, list) else f"a scalar ({type(doc.data).__name__})"
            )
            diagnostics.append(
                _diagnostic(
                    doc, [], f"a manifest must be a mapping of keys, got {kind}", "", "shape"
                )
            )
            continue
        found = schema.problems(doc.data)
        for p in found:
            diagnostics.append(_diagnostic(doc, p.path, p.message, p.hint, "schema", key=p.key))
        if not found:
            valid.append(doc)
    return valid


def _reaches(finding: semantic.Finding, given: set[int], by_name: dict[str, Document]) -> bool:
    """Whether a finding on a checkpoint reference follows references into a given document."""
    if tuple(finding.path[:2]) != ("checkpoint", "source"):
        return False
    doc: Document | None = finding.document
    visited: set[int] = set()
    while doc is not None and id(doc) not in visited:
        if id(doc) in given:
            return True
        visited.add(id(doc))
        source = checkpoint_source(doc.data)
        doc = by_name.get(source.experiment) if source and source.experiment else None
    return False
