"""Rules a JSON Schema can't express: across documents, files and the repository."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himl_manifest.diagnostics import close_matches, did_you_mean
from himl_manifest.manifest.container_source import SourceIndex, StaticClass
from himl_manifest.manifest.loader import Document
from himl_manifest.model import (
    ATTEMPT_SUFFIX_MAX,
    CLUSTER_MAX_MANIFEST_TAGS,
    SERVICE_MAX_DESCRIPTION,
    SERVICE_MAX_NAME,
    SERVICE_MAX_TAGS,
    WORKFLOW_FIELDS,
    checkpoint_source,
    seed_list,
)
from himl_manifest.paths import project_root
from himl_manifest.records.tags import RESERVED_TAG_PREFIXES, reserved_tag

#: Manifest fields holding a path that must stay inside the repository.
LOCAL_PATH_FIELDS: tuple[tuple[str | int, ...], ...] = (
    ("code_root",),
    ("environment", "conda_file"),
    ("compute", "workspace_config"),
    ("checkpoint", "source", "path"),
)


@dataclass(frozen=True)
class Finding:
    """A semantic problem: the document, the path in it, the message and a hint.

    With ``key`` the position reported is the mapping key at the end of ``path`` (not its value).
    """

    document: Document
    path: tuple[str | int, ...]
    message: str
    hint: str = ""
    code: str = "semantic"
    key: bool = False
    #: "error", or "warning": reported, but the manifest stays valid (validate exits 0).
    severity: str = "error"


def find_root(start: Path) -> Path:
    """The repository root of a manifest folder (see :func:`himl_manifest.paths.project_root`).

    Cached by absolute path (every manifest of a folder shares it); a relative ``start`` is
    made absolute first, so a change of directory can't return a stale root.
    """
    return _find_root(Path(os.path.abspath(start)))


@functools.lru_cache(maxsize=256)
def _find_root(start: Path) -> Path:
    return project_root(start)


@functools.cache
def _trainer_options() -> frozenset[str]:
    from himl_manifest.manifest.schema import resolve, schema

    return frozenset(resolve(schema()["properties"]["trainer"])["properties"])


def params_conflict(name: str) -> tuple[str, str] | None:
    """Why ``params`` may not set container field ``name`` (message, hint), or None when it may.

    A trainer option (the schema's ``trainer`` section) belongs under ``trainer:``, and a field
    of :data:`WORKFLOW_FIELDS` under its own manifest key. `himl validate` reports this, and the
    runner refuses a run spec that does it anyway.
    """
    if name in _trainer_options():
        return "set it under `trainer:`", "a Lightning Trainer option, not a container parameter"
    if name in WORKFLOW_FIELDS:
        return (
            f"set it with `{WORKFLOW_FIELDS[name]}`",
            "the manifest sets this field itself; params may not override it",
        )
    return None


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


def check(documents: list[Document], sources: SourceIndex | None = None) -> Iterator[Finding]:
    """Every semantic problem of a set of schema-valid documents. ``sources`` caches the
    containers' parsed sources (default: a new cache for this call)."""
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
    sources = sources or SourceIndex()  # each container's source is parsed once per run
    for doc in documents:
        yield from _check_one(doc, by_name, sources)
    yield from _check_cycles(by_name)


def _check_one(
    doc: Document, by_name: dict[str, Document], sources: SourceIndex
) -> Iterator[Finding]:
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
    parsed = checkpoint_source(data)
    if parsed is not None and parsed.kind == "url" and parsed.sha256 is None:
        yield Finding(
            doc,
            ("checkpoint", "source", "url"),
            "checkpoint URL without a sha256: whatever the server sends is used",
            "add checkpoint.source.sha256 (hex) to pin the file",
            code="checkpoint-unpinned",
            severity="warning",
        )
    if parsed is not None and parsed.experiment is not None:
        target = by_name.get(parsed.experiment)
        if target is None:
            hint = did_you_mean(parsed.experiment, sorted(by_name))
            yield Finding(
                doc,
                ("checkpoint", "source", "experiment"),
                f"no experiment named {parsed.experiment!r} in the manifests given",
                hint,
            )
        else:
            if parsed.seed is not None:
                seeds = seed_list(target.data.get("seeds"))
                if parsed.seed not in seeds:
                    yield Finding(
                        doc,
                        ("checkpoint", "source", "seed"),
                        f"experiment {parsed.experiment!r} has no seed {parsed.seed}",
                        "its seeds: " + ", ".join(map(str, seeds[:20])),
                    )
            yield from _check_source_fold(doc, target)
    yield from _check_crossval(doc)
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
    yield from _check_params(doc, sources)
    yield from _check_paths(doc)
    yield from _check_tag_names(doc)
    if compute.get("target", "local") != "local":
        yield from _check_service_limits(doc)


def _check_tag_names(doc: Document) -> Iterator[Finding]:
    """A tag under a prefix the tool or a store owns (``himl.state``, ``mlflow.runName``,
    ``azureml.*``) would overwrite the run's own state: refused at its key."""
    tags = doc.data.get("tags")
    for key in tags if isinstance(tags, dict) else ():
        if reserved_tag(key):
            yield Finding(
                doc,
                ("tags", key),
                f"tag {key!r} is under a reserved prefix "
                f"({', '.join(p + '*' for p in RESERVED_TAG_PREFIXES)})",
                "these belong to the tool and the run store: choose another name",
                key=True,
            )


def _check_service_limits(doc: Document) -> Iterator[Finding]:
    """What a cluster's jobs must fit (Azure ML's service limits), before any plan: a job
    that breaks one fails at the service, or inside the running job."""
    data = doc.data
    tags = data.get("tags") or {}
    if len(tags) > CLUSTER_MAX_MANIFEST_TAGS:
        yield Finding(
            doc,
            ("tags",),
            f"{len(tags)} tags: a cluster run takes at most {CLUSTER_MAX_MANIFEST_TAGS}: Azure "
            f"ML allows {SERVICE_MAX_TAGS} tags per job, and each manifest tag is written twice "
            "beside the tool's own",
            "keep the tags that matter for finding runs; put the rest in the description",
        )
    description = data.get("description") or ""
    if len(description) > SERVICE_MAX_DESCRIPTION:
        yield Finding(
            doc,
            ("description",),
            f"{len(description)} characters: an Azure ML job's description takes at most "
            f"{SERVICE_MAX_DESCRIPTION}",
            "shorten it; a link to a document can say the rest",
        )
    seeds = seed_list(data.get("seeds")) or [0]
    longest = f"{data['name']}-s{max(seeds, key=lambda s: len(str(s)))}-f99-12345678"
    if len(longest) + ATTEMPT_SUFFIX_MAX > SERVICE_MAX_NAME:
        yield Finding(
            doc,
            ("name",),
            f"its run names reach {len(longest) + ATTEMPT_SUFFIX_MAX} characters with the "
            f"seed, fold, hash and attempt: an Azure ML job name takes at most "
            f"{SERVICE_MAX_NAME}",
            "use a shorter name or smaller seeds",
        )


def _folds(data: dict[str, Any]) -> tuple[int, list[int]]:
    """``(crossval.folds, the folds run)`` of a document; ``(0, [])`` without folds."""
    crossval = data.get("crossval")
    if not isinstance(crossval, dict) or not isinstance(crossval.get("folds"), int):
        return 0, []
    count = int(crossval["folds"])
    indices = crossval.get("indices")
    if not isinstance(indices, list):
        return count, list(range(count))
    return count, [i for i in indices if isinstance(i, int) and i < count]


def _check_crossval(doc: Document) -> Iterator[Finding]:
    count, _ = _folds(doc.data)
    indices = (doc.data.get("crossval") or {}).get("indices")
    if not count or not isinstance(indices, list):
        return
    seen: set[int] = set()
    for position, index in enumerate(indices):
        if index in seen:
            yield Finding(doc, ("crossval", "indices", position), f"fold {index} is listed twice")
        seen.add(index)
        if isinstance(index, int) and index >= count:
            yield Finding(
                doc,
                ("crossval", "indices", position),
                f"fold {index} does not exist: crossval.folds is {count}",
                f"folds are numbered 0..{count - 1}",
            )


def _check_source_fold(doc: Document, target: Document) -> Iterator[Finding]:
    """The fold a checkpoint source reads (``spec.upstream_fold``'s rule, with positions)."""
    name = target.data["name"]
    named = doc.data["checkpoint"]["source"].get("fold")
    count, upstream_folds = _folds(target.data)
    own_count, own_folds = _folds(doc.data)
    where = ("checkpoint", "source", "fold")
    if not count:
        if named is not None:
            yield Finding(doc, where, f"experiment {name!r} has no cross-validation folds")
        return
    if named is not None:
        if named not in upstream_folds:
            listed = ", ".join(map(str, upstream_folds))
            yield Finding(
                doc, where, f"experiment {name!r} runs no fold {named}", f"its folds: {listed}"
            )
        return
    if own_count != count:
        yield Finding(
            doc,
            ("checkpoint", "source", "experiment"),
            f"experiment {name!r} has {count} cross-validation folds: say which one to start from",
            "set checkpoint.source.fold, or give this experiment the same crossval.folds to "
            "start each fold from its own",
        )
        return
    missing = [fold for fold in own_folds if fold not in upstream_folds]
    if missing:
        yield Finding(
            doc,
            ("checkpoint", "source", "experiment"),
            f"experiment {name!r} runs no fold {missing[0]}, which this one's fold "
            f"{missing[0]} starts from",
            "its folds: " + ", ".join(map(str, upstream_folds)),
        )


def _check_params(doc: Document, sources: SourceIndex) -> Iterator[Finding]:
    params = doc.data.get("params")
    if not isinstance(params, dict) or not params:
        return
    container: StaticClass | None = None
    for name in params:
        conflict = params_conflict(str(name))
        if conflict is not None:
            yield Finding(doc, ("params", name), *conflict, key=True)
            continue
        if container is None:
            container = sources.container(str(doc.data["container"]), code_roots(doc))
            if container is None:
                return  # its source can't be read statically: --check-imports can tell
        if name not in container.fields:
            yield Finding(
                doc,
                ("params", name),
                f"{container.name} has no field {name!r}",
                unknown_field_hint(str(name), container),
                code="params",
                key=True,
            )


def code_roots(doc: Document) -> tuple[Path, ...]:
    """The folders a manifest's job imports its code from: ``code_root``, the repository root,
    and the ``src/`` folder of each (an installed ``src`` layout)."""
    return _code_roots(find_root(doc.file.path.parent), str(doc.data.get("code_root", ".")))


@functools.lru_cache(maxsize=256)
def _code_roots(root: Path, code_root: str) -> tuple[Path, ...]:
    code = Path(os.path.normpath(root / code_root))
    if not code.is_relative_to(root):  # reported by the path rule; read nothing out there
        code = root
    return tuple(dict.fromkeys((code, root, code / "src", root / "src")))


def unknown_field_hint(name: str, container: StaticClass) -> str:
    """did you mean ...? among the fields params may set; else a field set elsewhere (with where
    to set it); else the container's own fields."""
    settable = [f for f in container.fields if params_conflict(f) is None]
    hint = did_you_mean(name, settable)
    if hint:
        return hint
    elsewhere = close_matches(name, [f for f in container.fields if f not in settable])
    conflict = params_conflict(elsewhere[0]) if elsewhere else None
    if conflict is not None:
        return f"did you mean {elsewhere[0]!r}? {conflict[0]}"
    own = [f for f in container.own_fields() if f in settable]
    if own:
        shown = ", ".join(own[:12]) + (", ..." if len(own) > 12 else "")
        return f"its fields: {shown}"
    return f"{container.name} declares no fields of its own"


def _check_paths(doc: Document) -> Iterator[Finding]:
    root = find_root(doc.file.path.parent)
    fields = list(LOCAL_PATH_FIELDS)
    for index, dataset in enumerate(doc.data.get("datasets", [])):
        if "local" in dataset:
            fields.append(("datasets", index, "local"))
    code_paths = (doc.data.get("code") or {}).get("paths") or []
    fields += [("code", "paths", index) for index in range(len(code_paths))]
    for field in fields:
        value = _get(doc.data, field)
        if not isinstance(value, str):
            continue
        try:
            resolved = (root / value).resolve()
        except (OSError, ValueError) as exc:  # the schema refuses NUL; the OS may refuse more
            yield Finding(doc, field, f"path {value!r} is not a usable path: {exc}")
            continue
        if not resolved.is_relative_to(root):
            yield Finding(
                doc,
                field,
                f"path {value!r} points outside the repository",
                f"repository root: {root}",
            )
        elif field == ("environment", "conda_file") and not _is_file(resolved):
            yield Finding(doc, field, f"conda file {value!r} does not exist", f"looked in {root}")
        elif field[:2] == ("code", "paths") and not _exists(resolved):
            yield Finding(
                doc,
                field,
                f"code path {value!r} does not exist",
                f"paths are relative to the repository root, {root}",
            )


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; False where the OS can't even look."""
    try:
        return path.exists()
    except OSError:
        return False


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; False where the OS can't even look (a name too long)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _check_cycles(by_name: dict[str, Document]) -> Iterator[Finding]:
    def parent(name: str) -> str | None:
        source = checkpoint_source(by_name[name].data)
        target = source.experiment if source is not None else None
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
