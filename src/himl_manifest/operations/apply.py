"""`himl apply`: the plan to carry out (made now, or a saved one checked for staleness), git
provenance stamped on every run it submits, then :func:`himl_manifest.apply.execute.execute`.

The CLI shows the plan and asks for confirmation between :func:`prepare` and :func:`apply`.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path

from himl_manifest.apply.execute import ApplyResult, execute
from himl_manifest.backends.base import Backend, ProgressCallback
from himl_manifest.errors import UsageError
from himl_manifest.model import CHANGING, ActionKind
from himl_manifest.operations.plan import DEFAULT_PATHS, check_fresh, make_plan
from himl_manifest.operations.provenance import gather, refuse_dirty
from himl_manifest.paths import project_root
from himl_manifest.plan.model import Plan


def saved_plan(paths: Sequence[Path]) -> Plan | None:
    """The plan in ``paths`` when it is one saved plan file (``himl plan -o``), else None."""
    if len(paths) != 1 or not paths[0].is_file():
        return None
    try:
        text = paths[0].read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    if not text.lstrip().startswith("{"):
        return None
    try:
        document = json.loads(text)
    except json.JSONDecodeError:
        return None
    found = document.get("format") if isinstance(document, dict) else None
    if not isinstance(found, str) or not found.startswith("himl-plan/"):
        return None
    from himl_manifest.plan.serialize import plan_from_json

    return plan_from_json(text)


def prepare(
    paths: Sequence[Path],
    backend: Backend,
    *,
    targets: Collection[str] = (),
    retry_failed: bool = False,
) -> Plan:
    """The plan to apply: a saved plan in ``paths`` (refused when stale), else a new one."""
    saved = saved_plan(paths)
    if saved is None:
        return make_plan(
            paths or [Path(p) for p in DEFAULT_PATHS],
            backend,
            retry_failed=retry_failed,
            targets=targets or None,
        )
    if targets or retry_failed:
        raise UsageError("--target and --retry-failed are fixed by a saved plan: plan again")
    check_fresh(saved, backend)
    return saved


def has_work(plan: Plan, prune: bool) -> bool:
    return any(a.kind in CHANGING or (prune and a.kind == ActionKind.ORPHAN) for a in plan.actions)


def stamp_provenance(plan: Plan, root: Path, allow_dirty: bool) -> Plan:
    """``plan`` with the git provenance of its manifest on every run it submits or updates;
    a manifest with uncommitted changes (or untracked) is refused unless ``allow_dirty``,
    which is then recorded on its runs (``dirty=true``)."""
    stamped = [a for a in plan.actions if a.run is not None and a.kind in CHANGING]
    found = gather(root, {a.run.manifest_path for a in stamped if a.run is not None})
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
) -> ApplyResult:
    """Stamp provenance on ``plan``'s runs and carry it out through ``backend``."""
    stamped = stamp_provenance(plan, root or project_root(), allow_dirty)
    return execute(stamped, backend, prune=prune, wait=wait, progress=progress)
