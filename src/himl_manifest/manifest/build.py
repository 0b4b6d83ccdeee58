"""Validated manifest documents -> :class:`~himl_manifest.spec.Experiment` objects."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from himl_manifest.errors import ManifestError
from himl_manifest.manifest.loader import Document
from himl_manifest.manifest.semantic import find_root
from himl_manifest.manifest.validate import ValidationResult, validate_paths
from himl_manifest.spec import Experiment, normalize


def build(documents: Iterable[Document]) -> list[Experiment]:
    experiments = []
    roots: dict[Path, Path] = {}
    for doc in documents:
        folder = doc.file.path.parent
        root = roots.get(folder) or roots.setdefault(folder, find_root(folder))
        path = doc.file.path.resolve()
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
        spec = normalize(doc.data)
        experiments.append(
            Experiment(name=spec["name"], spec=spec, manifest_path=relative, root=root)
        )
    return experiments


def load_experiments(
    paths: Iterable[Path], *, allow_empty: bool = False
) -> tuple[list[Experiment], ValidationResult]:
    """Validate ``paths`` and build their experiments; any diagnostic is a ManifestError."""
    result = validate_paths(paths, allow_empty=allow_empty)
    if not result.ok:
        from himl_manifest.diagnostics import render_text

        raise ManifestError(
            "invalid manifests:\n" + render_text(result.diagnostics, len(result.files))
        )
    return build(result.documents), result
