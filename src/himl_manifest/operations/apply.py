"""`himl apply` as one session in explicit phases (:func:`run_session`):

load the manifests → plan against the store (one read) → pre-flight → confirm → stamp
provenance and submit → wait → the result to summarize. The CLI only parses its options and
renders what the session tells its :class:`ApplyView` (the plan, problems, warnings, progress),
then the result; the phases are also callable one by one (:func:`prepare`, :func:`preflight`,
:func:`apply`) for library use and tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from himl_manifest.apply.execute import ApplyResult, execute
from himl_manifest.backends.base import Backend, ProgressCallback
from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import ConfigError, HimlError, UsageError
from himl_manifest.model import CHANGING, SUBMITTING, ActionKind
from himl_manifest.operations.plan import DEFAULT_PATHS, check_fresh, load, plan_against
from himl_manifest.paths import project_root
from himl_manifest.plan.model import Plan
from himl_manifest.provenance import gather, refuse_dirty
from himl_manifest.spec import RunSpec

if TYPE_CHECKING:
    from himl_manifest.backends.base import Progress


def saved_plan(paths: Sequence[Path]) -> Plan | None:
    """The plan in ``paths`` when it is one saved plan file (``himl plan -o``), else None.

    One file that is not a manifest (``*.yaml``, ``*.yml``) and holds JSON (or is named
    ``*.json``) is taken for a saved plan: when it is not one, or is cut short, or fails its
    verification (:func:`himl_manifest.plan.serialize.plan_from_json`), a ConfigError names
    the file and says so."""
    if len(paths) != 1 or not paths[0].is_file():
        return None
    path = paths[0]
    if path.suffix.lower() in (".yaml", ".yml"):
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.lstrip().startswith("{") and path.suffix.lower() != ".json":
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path}: not a saved plan: not valid JSON ({exc}); cut short? Save it again with "
            "`himl plan -o FILE`"
        ) from exc
    found = document.get("format") if isinstance(document, dict) else None
    if not isinstance(found, str) or not found.startswith("himl-plan/"):
        raise ConfigError(
            f"{path}: not a saved plan (format {found!r}, expected 'himl-plan/v1'): apply takes "
            "manifests, or a plan saved with `himl plan -o FILE`"
        )
    from himl_manifest.plan.serialize import plan_from_json

    try:
        return plan_from_json(text)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def prepare(
    paths: Sequence[Path],
    open_backend: Callable[[], Backend],
    *,
    targets: Collection[str] = (),
    retry_failed: bool = False,
    replace_runs: Sequence[str] = (),
) -> tuple[Plan, Backend]:
    """The plan to apply, and the backend it was checked against: a saved plan in ``paths``
    (refused when stale), else a new one (``replace_runs``: ``--replace``). The backend is
    opened once the manifests are valid, so invalid manifests are reported without creating
    or waiting for a store."""
    saved = saved_plan(paths)
    if saved is None:
        desired = load(paths or [Path(p) for p in DEFAULT_PATHS])
        backend = open_backend()
        plan = plan_against(
            desired,
            backend,
            retry_failed=retry_failed,
            targets=targets or None,
            replace_runs=replace_runs,
        )
        return plan, backend
    if targets or retry_failed or replace_runs:
        raise UsageError(
            "--target, --retry-failed and --replace are fixed by a saved plan: plan again "
            "(`himl plan --replace RUN -o FILE`)"
        )
    backend = open_backend()
    check_fresh(saved, backend)
    return saved, backend


def preflight(plan: Plan, backend: Backend, root: Path | None = None) -> list[Diagnostic]:
    """Before anything is uploaded or submitted: every run ``plan`` would submit has somewhere
    to go (ConfigError: e.g. a cluster target without a workspace), and every problem its
    executor finds (for Azure ML: the code snapshot, the conda file, the workspace's computes,
    data and datastores, upstream checkpoints), at the line of the manifest field concerned."""
    from himl_manifest.manifest.positions import locate

    runs = [
        a.run for a in plan.actions if a.run is not None and a.kind in SUBMITTING and not a.blocked
    ]
    if not runs:
        return []
    expected = {
        a.run_name for a in plan.actions if a.kind in SUBMITTING or a.kind == ActionKind.WAIT
    }
    found = [*_capability_problems(runs, backend), *backend.preflight(runs, expected=expected)]
    return locate(found, root or project_root())


def _capability_problems(runs: Sequence[RunSpec], backend: Backend) -> list[Diagnostic]:
    """What a run asks of its executor that the executor cannot do (several nodes)."""
    problems = []
    for run in runs:
        nodes = int((run.spec.get("compute") or {}).get("num_nodes", 1))
        if nodes > 1 and not backend.capabilities_of(run).multi_node:
            problems.append(
                Diagnostic(
                    run.manifest_path or "<run spec>",
                    0,
                    0,
                    "compute.num_nodes",
                    f"{run.run_name}: {nodes} nodes, but its executor "
                    f"({backend.placement(run)}) runs a run on one node",
                    "set compute.num_nodes: 1, or a target whose executor runs several nodes",
                    "preflight",
                )
            )
    return problems


def runs_elsewhere(plan: Plan, backend: Backend) -> list[str]:
    """The runs ``plan`` submits to an executor whose runs go on without us (not waited for
    unless asked)."""
    return [
        a.run_name
        for a in plan.actions
        if a.run is not None
        and a.kind in SUBMITTING
        and not a.blocked
        and not backend.capabilities_of(a.run).waits_locally
    ]


def has_work(plan: Plan, prune: bool) -> bool:
    return any(a.kind in CHANGING or (prune and a.kind == ActionKind.ORPHAN) for a in plan.actions)


def stamp_provenance(
    plan: Plan, root: Path, allow_dirty: bool, warn: Callable[[str], None] | None = None
) -> Plan:
    """``plan`` with the git provenance of its manifest on every run it submits or updates;
    a manifest with uncommitted changes (or untracked) is refused unless ``allow_dirty``,
    which is then recorded on its runs (``dirty=true``). ``warn`` hears, once, about a
    shallow clone's history (:func:`~himl_manifest.provenance.gather`)."""
    stamped = [a for a in plan.actions if a.run is not None and a.kind in CHANGING]
    found = gather(root, {a.run.manifest_path for a in stamped if a.run is not None}, warn)
    if not allow_dirty:
        refuse_dirty(found)
    actions = []
    for action in plan.actions:
        if action.run is not None and action.kind in CHANGING:
            facts = {**found[action.run.manifest_path].facts, "allow_dirty": allow_dirty}
            run = replace(action.run, provenance={**action.run.provenance, **facts})
            action = replace(action, run=run)
        actions.append(action)
    return replace(plan, actions=tuple(actions))


def apply(
    plan: Plan,
    backend: Backend,
    *,
    prune: bool = False,
    allow_dirty: bool = False,
    wait: bool | None = None,
    progress: ProgressCallback | None = None,
    root: Path | None = None,
    warn: Callable[[str], None] | None = None,
) -> ApplyResult:
    """Stamp provenance on ``plan``'s runs and carry it out through ``backend`` (``wait``:
    also wait for the runs executed elsewhere, and submit what was deferred behind them)."""
    stamped = stamp_provenance(plan, root or project_root(), allow_dirty, warn)
    return execute(stamped, backend, prune=prune, wait=wait, progress=progress)


# --- the session ----------------------------------------------------------------------------


class ApplyView(Protocol):
    """What an apply session shows a person, phase by phase (the CLI prints it on stderr)."""

    def plan(self, plan: Plan) -> None:
        """The plan, once made (before anything changes)."""

    def nothing_to_do(self, plan: Plan) -> None:
        """The plan changes nothing apply would carry out."""

    def problems(self, diagnostics: list[Diagnostic]) -> None:
        """What pre-flight found (errors stop the session after this)."""

    def warning(self, text: str) -> None:
        """Something the person should know; nothing stops."""

    def confirm(self) -> None:
        """Last moment to say no (raise HimlError to decline): nothing has changed yet."""

    def waiting_elsewhere(self, runs: list[str]) -> None:
        """The session will wait for these runs, which execute elsewhere."""

    def progress(self, event: Progress) -> None:
        """A run changed state."""


@dataclass(frozen=True)
class ApplyRequest:
    """What `himl apply` was asked to do."""

    paths: Sequence[Path] = ()
    targets: Collection[str] = ()
    retry_failed: bool = False
    replace_runs: Sequence[str] = ()
    prune: bool = False
    allow_dirty: bool = False
    #: Confirmed beforehand (``--yes``): a store that looks lost is then only a warning.
    confirmed: bool = False
    #: Also wait for the runs executed elsewhere.
    wait: bool = False


def run_session(
    request: ApplyRequest, open_backend: Callable[[], Backend], view: ApplyView
) -> ApplyResult | None:
    """One apply, phase by phase; None when there was nothing to carry out. The backend is
    opened once the manifests are valid; the store is read once to plan."""
    plan, backend = prepare(
        list(request.paths),
        open_backend,
        targets=request.targets,
        retry_failed=request.retry_failed,
        replace_runs=request.replace_runs,
    )
    view.plan(plan)
    if not has_work(plan, request.prune):
        view.nothing_to_do(plan)
        return None
    problems = preflight(plan, backend)
    if problems:
        view.problems(problems)
        if any(p.severity == "error" for p in problems):
            raise HimlError("pre-flight found problems: nothing was submitted")
    for warning in backend.check_continuity(confirmed=request.confirmed):
        view.warning(warning)
    view.confirm()
    elsewhere = runs_elsewhere(plan, backend)
    if request.wait and elsewhere:
        view.waiting_elsewhere(elsewhere)
    return apply(
        plan,
        backend,
        prune=request.prune,
        allow_dirty=request.allow_dirty,
        wait=request.wait,
        progress=view.progress,
        warn=view.warning,
    )
