"""Rules a JSON Schema can't express: across documents, files and the repository."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himl_manifest.manifest.loader import Document
from himl_manifest.manifest.schema import did_you_mean
from himl_manifest.paths import project_root

#: Manifest fields holding a path that must stay inside the repository.
LOCAL_PATH_FIELDS: tuple[tuple[str | int, ...], ...] = (
    ("code_root",),
    ("environment", "conda_file"),
    ("compute", "workspace_config"),
    ("checkpoint", "source", "path"),
)


@dataclass(frozen=True)
class Finding:
    """A semantic problem: the document, the path in it, the message and a hint."""

    document: Document
    path: tuple[str | int, ...]
    message: str
    hint: str = ""
    code: str = "semantic"


def find_root(start: Path) -> Path:
    """The repository root of a manifest folder (see :func:`himl_manifest.paths.project_root`).

    Cached by absolute path (every manifest of a folder shares it); a relative ``start`` is
    made absolute first, so a change of directory can't return a stale root.
    """
    return _find_root(Path(os.path.abspath(start)))


@functools.lru_cache(maxsize=256)
def _find_root(start: Path) -> Path:
    return project_root(start)


def seed_list(seeds: Any) -> list[int]:
    """The seeds a manifest asks for: a count N means 0..N-1."""
    if isinstance(seeds, int):
        return list(range(seeds))
    return list(seeds) if isinstance(seeds, list) else [42]


def _get(data: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        if isinstance(data, dict):
            if step not in data:
                return None
            data = data[step]
        elif isinstance(data, list) and isinstance(step, int) and step < len(data):
            data = data[step]
        else:
            return None
    return data


def check(documents: list[Document]) -> Iterator[Finding]:
    """Every semantic problem of a set of schema-valid documents."""
    by_name: dict[str, Document] = {}
    for doc in documents:
        name = doc.data["name"]
        if name in by_name:
            first = by_name[name]
            line, _ = first.file.position(first.index, ["name"])
            yield Finding(
                doc,
                ("name",),
                f"experiment name {name!r} is already used",
                f"first defined at {first.file.display}:{line}",
            )
        else:
            by_name[name] = doc
    for doc in documents:
        yield from _check_one(doc, by_name)
    yield from _check_cycles(by_name)


def _check_one(doc: Document, by_name: dict[str, Document]) -> Iterator[Finding]:
    data = doc.data
    mode = data.get("mode", "train")
    checkpoint = data.get("checkpoint", {})
    source = checkpoint.get("source")
    if mode != "train" and source is None:
        yield Finding(
            doc, ("mode",), f"mode {mode!r} needs a checkpoint source (checkpoint.source)"
        )
    if checkpoint.get("resume"):
        if source is None:
            yield Finding(doc, ("checkpoint", "resume"), "resume needs a checkpoint source")
        if mode != "train":
            yield Finding(
                doc, ("checkpoint", "resume"), f"resume only applies to mode 'train', not {mode!r}"
            )
    if isinstance(source, dict) and "experiment" in source:
        target = by_name.get(source["experiment"])
        if target is None:
            hint = did_you_mean(source["experiment"], sorted(by_name))
            yield Finding(
                doc,
                ("checkpoint", "source", "experiment"),
                f"no experiment named {source['experiment']!r} in the manifests given",
                hint,
            )
        elif "seed" in source:
            seeds = seed_list(target.data.get("seeds", [42]))
            if source["seed"] not in seeds:
                yield Finding(
                    doc,
                    ("checkpoint", "source", "seed"),
                    f"experiment {source['experiment']!r} has no seed {source['seed']}",
                    "its seeds: " + ", ".join(map(str, seeds[:20])),
                )
    seeds = data.get("seeds")
    if isinstance(seeds, list):
        seen: set[int] = set()
        for index, seed in enumerate(seeds):
            if seed in seen:
                yield Finding(doc, ("seeds", index), f"seed {seed} is listed twice")
            seen.add(seed)
    compute = data.get("compute", {})
    if compute.get("num_nodes", 1) > 1 and compute.get("target", "local") == "local":
        yield Finding(
            doc,
            ("compute", "num_nodes"),
            "more than one node needs an Azure ML cluster",
            "set compute.target to the cluster's name",
        )
    yield from _check_paths(doc)


def _check_paths(doc: Document) -> Iterator[Finding]:
    root = find_root(doc.file.path.parent)
    fields = list(LOCAL_PATH_FIELDS)
    for index, dataset in enumerate(doc.data.get("datasets", [])):
        if "local" in dataset:
            fields.append(("datasets", index, "local"))
    for field in fields:
        value = _get(doc.data, field)
        if not isinstance(value, str):
            continue
        resolved = (root / value).resolve()
        if not resolved.is_relative_to(root):
            yield Finding(
                doc,
                field,
                f"path {value!r} points outside the repository",
                f"repository root: {root}",
            )
        elif field == ("environment", "conda_file") and not resolved.is_file():
            yield Finding(doc, field, f"conda file {value!r} does not exist", f"looked in {root}")


def _check_cycles(by_name: dict[str, Document]) -> Iterator[Finding]:
    def parent(name: str) -> str | None:
        source = by_name[name].data.get("checkpoint", {}).get("source", {})
        target = source.get("experiment") if isinstance(source, dict) else None
        return target if target in by_name else None

    reported: set[str] = set()
    for start in sorted(by_name):
        chain = [start]
        node = parent(start)
        while node is not None and node not in chain:
            chain.append(node)
            node = parent(node)
        if node is not None and node == start and not reported & set(chain):
            reported.update(chain)
            loop = " -> ".join([*chain, start])
            yield Finding(
                by_name[start],
                ("checkpoint", "source", "experiment"),
                f"checkpoint sources form a cycle: {loop}",
            )
