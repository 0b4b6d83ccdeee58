"""Validated manifest documents -> :class:`~himl_manifest.spec.Experiment` objects.

:func:`normalize` applies the schema's defaults (read from the schema itself, so the format has
one definition) and spells seeds, and cross-validation folds, out as lists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from himl_manifest.errors import ManifestError
from himl_manifest.manifest.loader import Document
from himl_manifest.manifest.schema import resolve, schema
from himl_manifest.manifest.semantic import find_root
from himl_manifest.manifest.validate import ValidationResult, validate_paths
from himl_manifest.model import seed_list
from himl_manifest.spec import Experiment, fold_list, plain_copy


def _schema_defaults(value: Any, node: Mapping[str, Any]) -> Any:
    node = resolve(node)
    if isinstance(value, dict) and "oneOf" in node:
        for branch in node["oneOf"]:
            branch = resolve(branch)
            props = branch.get("properties", {})
            if all(k in value for k in branch.get("required", [])) and set(value) <= set(props):
                return _schema_defaults(value, branch)
        return value
    if isinstance(value, dict) and "properties" in node:
        out = dict(value)
        for key, sub in node["properties"].items():
            sub = resolve(sub)
            if key in out:
                out[key] = _schema_defaults(out[key], sub)
            elif "default" in sub:
                out[key] = plain_copy(sub["default"])
            elif sub.get("type") == "object" and "properties" in sub:
                filled = _schema_defaults({}, sub)
                if filled:
                    out[key] = filled
        return out
    if isinstance(value, list) and "items" in node:
        return [_schema_defaults(item, node["items"]) for item in value]
    return value


def normalize(document: Mapping[str, Any]) -> dict[str, Any]:
    """A schema-valid manifest with every default applied and seeds as an explicit list."""
    data: dict[str, Any] = _schema_defaults(plain_copy(dict(document)), schema())
    data["seeds"] = seed_list(data["seeds"])
    if "crossval" in data:  # the folds it runs, spelled out as seeds are
        data["crossval"]["indices"] = [f for f in fold_list(data) if f is not None]
    data["tracking"].setdefault("experiment", data["container"].rsplit(".", 1)[-1])
    return data


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
