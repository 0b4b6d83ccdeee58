"""Pre-flight: everything about Azure ML runs that can be checked before anything is uploaded.

:func:`preflight` looks at the runs bound for an Azure ML cluster and returns every problem at
once, as :class:`~himl_manifest.diagnostics.Diagnostic` values (the format of ``himl
validate``; warnings have ``severity="warning"``):

- the code snapshot of each code root (:mod:`.snapshot`): over the size limit (with the largest
  files and the ``.amlignore`` lines that would drop them), symlinks (broken or leading outside
  the code root: errors; others: warnings);
- a checkpoint ``path`` source that the snapshot does not carry;
- each conda file and its pip includes (:mod:`.environment`), with file and line; a job with
  neither conda file nor image; an environment without himl-manifest (the job's command) or
  azureml-mlflow (metrics in the workspace);
- per run: the run spec fits the job (:data:`.jobs.MAX_RUN_SPEC_ENV`), a checkpoint source is
  resolved, ``trainer.devices: auto`` on several nodes.

What needs the workspace (the cluster exists, the data assets and datastores resolve, an
upstream job exists) is the ``workspace_check`` hook's: a callable the Azure ML store supplies,
whose diagnostics are added to these.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath

from himl_manifest.backends.azureml.environment import (
    ResolvedConda,
    display_path,
    resolve_conda_file,
)
from himl_manifest.backends.azureml.jobs import checkpoint_reference, run_spec_env
from himl_manifest.backends.azureml.snapshot import (
    AML_IGNORE,
    GIT_IGNORE,
    SIZE_LIMIT,
    Snapshot,
    amlignore_line,
    code_snapshot,
    human_size,
)
from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import ConfigError
from himl_manifest.model import checkpoint_source
from himl_manifest.spec import RunSpec, find_conda_file

#: Checks that need the workspace: runs -> diagnostics (supplied by the Azure ML store).
WorkspaceCheck = Callable[[Sequence[RunSpec]], Iterable[Diagnostic]]
CODE = "preflight"
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def azure_runs(runs: Iterable[RunSpec]) -> list[RunSpec]:
    """The runs bound for an Azure ML cluster (``compute.target`` other than ``local``)."""
    return [r for r in runs if str(r.spec.get("compute", {}).get("target", "local")) != "local"]


def preflight(
    runs: Sequence[RunSpec], root: Path, *, workspace_check: WorkspaceCheck | None = None
) -> list[Diagnostic]:
    """Every problem of the Azure ML runs among ``runs`` (see the module doc), sorted."""
    selected = azure_runs(runs)
    if not selected:
        return []
    found: list[Diagnostic] = []
    snapshots: dict[str, Snapshot] = {}
    for run in selected:
        code_root = str(run.spec.get("code_root", "."))
        if code_root not in snapshots:
            snapshots[code_root] = code_snapshot(root, code_root)
            found += snapshot_problems(snapshots[code_root], root)
        found += _checkpoint_path_problems(run, snapshots[code_root], root)
    found += _environment_problems(selected, root, snapshots)
    found += _run_problems(selected)
    if workspace_check is not None:
        found += list(workspace_check(selected))
    return sorted(set(found))


# --- the snapshot ----------------------------------------------------------------------------


def snapshot_problems(snapshot: Snapshot, root: Path) -> list[Diagnostic]:
    """Size and symlinks of one code snapshot."""
    where = display_path(snapshot.root, root) or "."
    found: list[Diagnostic] = []
    replaces = (
        f" (an {AML_IGNORE} replaces {GIT_IGNORE} entirely: copy its lines in first)"
        if snapshot.ignore_file == GIT_IGNORE
        else ""
    )
    if snapshot.over_limit:
        largest = snapshot.largest()
        names = ", ".join(f"{f.relative} ({human_size(f.size)})" for f in largest)
        lines = list(dict.fromkeys(amlignore_line(f.relative, snapshot.files) for f in largest))
        found.append(
            _diagnostic(
                where,
                "code_root",
                f"the code snapshot is {human_size(snapshot.total_size)} in "
                f"{len(snapshot.files)} files, over Azure ML's {human_size(SIZE_LIMIT)} limit; "
                f"largest: {names}",
                f"add to {where}/{AML_IGNORE}: {', '.join(lines)}{replaces}",
            )
        )
    for link in snapshot.symlinks:
        if link.broken or link.outside:
            why = "is broken" if link.broken else "leads outside the code root"
            found.append(
                _diagnostic(
                    where,
                    "code_root",
                    f"symlink {link.relative} -> {link.target} {why}: the upload follows "
                    "symlinks and fails or copies files from elsewhere",
                    f"remove it, or add `/{link.relative}` to {where}/{AML_IGNORE}{replaces}",
                )
            )
        else:
            found.append(
                _diagnostic(
                    where,
                    "code_root",
                    f"symlink {link.relative} -> {link.target}: the job gets a copy of "
                    f"its target{'s folder' if link.is_dir else ''}",
                    "replace it with the file, or ignore it",
                    severity="warning",
                )
            )
    return found


def _checkpoint_path_problems(run: RunSpec, snapshot: Snapshot, root: Path) -> list[Diagnostic]:
    source = checkpoint_source(run.spec)
    if source is None or source.path is None or run.resume_from:
        return []
    absolute = (root / source.path).resolve()
    try:
        inside = PurePosixPath(absolute.relative_to(snapshot.root).as_posix())
    except ValueError:
        inside = None
    if inside is not None and any(f.relative == inside.as_posix() for f in snapshot.files):
        return []
    why = "is outside the code root" if inside is None else "is not in the code snapshot"
    return [
        _diagnostic(
            run.manifest_path,
            "checkpoint.source.path",
            f"{source.path} {why}: the Azure ML job would not have it",
            "keep it in the code root and out of the ignore file, or register it and use a run",
        )
    ]


# --- the environment -------------------------------------------------------------------------


def _environment_problems(
    runs: Sequence[RunSpec], root: Path, snapshots: dict[str, Snapshot]
) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    resolved: dict[Path, ResolvedConda] = {}
    for run in runs:
        path = find_conda_file(root, run.spec)
        has_image = bool(run.spec.get("environment", {}).get("image"))
        if path is None or not path.is_file():
            if not has_image:
                shown = display_path(path, root) if path else "environment.yml"
                found.append(
                    _diagnostic(
                        run.manifest_path,
                        "environment.conda_file",
                        f"no conda file ({shown}, searched upward from the code root) and no "
                        "environment.image: the job would have no Python packages",
                        "add environment.yml, or set environment.conda_file or .image",
                    )
                )
            continue
        if path not in resolved:
            resolved[path] = resolve_conda_file(path, root=root)
            found += resolved[path].problems
            snapshot = snapshots[str(run.spec.get("code_root", "."))]
            found += _package_problems(resolved[path], snapshot, root)
    return found


def _package_problems(conda: ResolvedConda, snapshot: Snapshot, root: Path) -> list[Diagnostic]:
    """An environment without the packages the job itself needs (warnings)."""
    if conda.data is None:
        return []
    names = {_requirement_name(line) for line in conda.pip_requirements}
    names |= {
        _requirement_name(str(d))
        for d in conda.data.get("dependencies") or []
        if isinstance(d, str)
    }
    shown = display_path(conda.path, root)
    found = []
    carried = any(f.relative == "himl_manifest/__init__.py" for f in snapshot.files)
    if "himl-manifest" not in names and not carried:
        found.append(
            _diagnostic(
                shown,
                "dependencies.pip",
                "the job runs `python -m himl_manifest.cli.main`, but this environment does not "
                "install himl-manifest and the code snapshot has no top-level himl_manifest",
                "add `himl-manifest[azure]` to the pip section",
                severity="warning",
            )
        )
    if "azureml-mlflow" not in names:
        found.append(
            _diagnostic(
                shown,
                "dependencies.pip",
                "without azureml-mlflow the job cannot record its metrics in the workspace",
                "add `azureml-mlflow` to the pip section",
                severity="warning",
            )
        )
    return found


def _requirement_name(line: str) -> str:
    match = _REQUIREMENT_NAME.match(line)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


# --- each run --------------------------------------------------------------------------------


def _run_problems(runs: Sequence[RunSpec]) -> list[Diagnostic]:
    found: list[Diagnostic] = []
    for run in runs:
        for check in (run_spec_env, checkpoint_reference):
            try:
                check(run)
            except ConfigError as exc:
                found.append(_diagnostic(run.manifest_path, "", str(exc)))
        compute = run.spec.get("compute", {})
        devices = run.spec.get("trainer", {}).get("devices", "auto")
        if int(compute.get("num_nodes", 1)) > 1 and devices == "auto":
            found.append(
                _diagnostic(
                    run.manifest_path,
                    "trainer.devices",
                    "devices is 'auto' on several nodes: Azure ML starts one process per node, "
                    "which uses one GPU of each",
                    "set trainer.devices to the number of GPUs per node",
                    severity="warning",
                )
            )
    return found


def _diagnostic(
    file: str, path: str, message: str, hint: str = "", *, severity: str = "error"
) -> Diagnostic:
    return Diagnostic(file or "<run spec>", 0, 0, path, message, hint, CODE, severity)
