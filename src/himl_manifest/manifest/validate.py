"""`himl validate` as a core function: paths in, diagnostics and valid documents out."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.manifest import schema, semantic
from himl_manifest.manifest.loader import Document, LoadedFile, discover, load_file


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


def validate_paths(paths: Iterable[Path], *, allow_empty: bool = False) -> ValidationResult:
    """Load and validate every manifest under ``paths``; every problem of every file at once."""
    result = ValidationResult()
    seen: set[Path] = set()
    for path, problem in discover(paths, allow_empty=allow_empty):
        if problem is not None:
            result.diagnostics.append(problem)
            continue
        real = Path(os.path.realpath(path))  # Path.resolve raises on a symlink loop
        if real in seen:
            continue
        seen.add(real)
        loaded = load_file(path, display_path(path))
        result.files.append(loaded)
        result.diagnostics.extend(loaded.diagnostics)
        for doc in loaded.documents:
            if not isinstance(doc.data, dict):
                kind = (
                    "a list"
                    if isinstance(doc.data, list)
                    else f"a scalar ({type(doc.data).__name__})"
                )
                result.diagnostics.append(
                    _diagnostic(
                        doc, [], f"a manifest must be a mapping of keys, got {kind}", "", "shape"
                    )
                )
                continue
            found = schema.problems(doc.data)
            for p in found:
                result.diagnostics.append(
                    _diagnostic(doc, p.path, p.message, p.hint, "schema", key=p.key)
                )
            if not found:
                result.documents.append(doc)
    for finding in semantic.check(result.documents):
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
