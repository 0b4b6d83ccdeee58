"""The executor: the only control-plane step with side effects.

:func:`execute` carries out a :class:`~himl_manifest.plan.model.Plan` through a backend:

=========================  ======================================================================
action                     what happens
=========================  ======================================================================
create / retry             ``backend.submit`` (a retry is the next attempt of the same run name)
replace / resume           ``backend.submit``; once the new run exists, the previous run is
                           marked superseded (``set_state``), never deleted
update                     ``backend.update_metadata``: description, tags, display name in place
orphan                     ``set_state(archived)``, only with ``prune``
keep / wait                nothing
=========================  ======================================================================

Before anything, the git provenance of every manifest that produces a run is gathered; a
manifest with uncommitted changes (or not tracked) is refused unless ``allow_dirty``, which is
then recorded on its runs (``dirty=true``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from himl_manifest.apply.provenance import gather, refuse_dirty
from himl_manifest.backends.base import (
    ARCHIVED,
    CANCELLED,
    COMPLETED,
    FAILED,
    SUPERSEDED,
    Backend,
    Progress,
    ProgressCallback,
    RunRecord,
)
from himl_manifest.paths import project_root
from himl_manifest.plan.model import (
    CREATE,
    ORPHAN,
    REPLACE,
    RESUME,
    RETRY,
    SUBMITTING,
    UPDATE,
    Action,
    Plan,
)
from himl_manifest.spec import RunSpec

#: Past-tense phrases of the apply summary, in order.
_DONE = (
    (CREATE, "created"),
    (REPLACE, "replaced"),
    (RESUME, "resumed"),
    (RETRY, "retried"),
    (UPDATE, "updated"),
    (ORPHAN, "archived"),
)


@dataclass
class ApplyResult:
    """What an apply did: actions carried out per kind, and how the submitted runs ended."""

    done: dict[str, list[str]] = field(default_factory=dict)  # kind -> run names
    outcomes: dict[str, str] = field(default_factory=dict)  # submitted run -> final status
    superseded: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)  # created meanwhile by another apply
    orphans_left: int = 0  # orphans seen but not archived (no --prune)

    def count(self, kind: str) -> int:
        return len(self.done.get(kind, []))

    @property
    def failed(self) -> list[str]:
        return sorted(name for name, s in self.outcomes.items() if s in (FAILED, CANCELLED))

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_line(self) -> str:
        """``Apply complete: 1 created, 2 resumed. Runs: 3 completed, 1 failed.``"""
        parts = [f"{n} {word}" for kind, word in _DONE if (n := self.count(kind))]
        if not parts:
            line = "No changes."
        else:
            line = f"Apply {'complete' if self.ok else 'finished with failures'}: "
            line += ", ".join(parts) + "."
        if self.outcomes:
            statuses = Counter(self.outcomes.values())
            order = (COMPLETED, FAILED, CANCELLED)
            counted = [f"{statuses[s]} {s}" for s in order if statuses[s]]
            others = sum(n for s, n in statuses.items() if s not in order)
            if others:
                counted.append(f"{others} still running")
            line += f" Runs: {', '.join(counted)}."
        if self.orphans_left:
            line += f" {self.orphans_left} orphaned (archive them with --prune)."
        return line


def _with_provenance(
    actions: Sequence[Action], root: Path, allow_dirty: bool
) -> dict[str, RunSpec]:
    """The run of each action, stamped with its manifest's provenance (refusing dirty ones)."""
    paths = {a.run.manifest_path for a in actions if a.run is not None}
    found = gather(root, paths)
    if not allow_dirty:
        refuse_dirty(found)
    stamped: dict[str, RunSpec] = {}
    for action in actions:
        if action.run is None:
            continue
        facts = {**found[action.run.manifest_path].facts, "allow_dirty": allow_dirty}
        run = replace(action.run, provenance={**action.run.provenance, **facts})
        if action.kind == RESUME and run.resume_from is None and action.previous:
            run = replace(run, resume_from=action.previous)
        stamped[action.run_name] = run
    return stamped


def execute(
    plan: Plan,
    backend: Backend,
    *,
    prune: bool = False,
    jobs: int = 1,
    progress: ProgressCallback | None = None,
    allow_dirty: bool = False,
    root: Path | None = None,
) -> ApplyResult:
    """Carry out ``plan`` through ``backend``; wait for the submitted runs to end."""
    result = ApplyResult()
    submitting = [a for a in plan.actions if a.kind in SUBMITTING and a.run is not None]
    updates = [a for a in plan.actions if a.kind == UPDATE and a.run is not None]
    orphans = [a for a in plan.actions if a.kind == ORPHAN]
    runs = _with_provenance([*updates, *submitting], root or project_root(), allow_dirty)

    for action in updates:
        backend.update_metadata(action.run_name, runs[action.run_name])
        result.done.setdefault(UPDATE, []).append(action.run_name)
        if action.previous:
            _supersede(backend, action.previous, result)
    if prune:
        for action in orphans:
            backend.set_state(action.run_name, ARCHIVED)
            result.done.setdefault(ORPHAN, []).append(action.run_name)
    else:
        result.orphans_left = len(orphans)
    if submitting:
        _submit(backend, submitting, runs, result, jobs, progress)
    return result


def _supersede(backend: Backend, run_name: str, result: ApplyResult) -> None:
    if run_name not in result.superseded:
        backend.set_state(run_name, SUPERSEDED)
        result.superseded.append(run_name)


def _submit(
    backend: Backend,
    actions: Sequence[Action],
    runs: dict[str, RunSpec],
    result: ApplyResult,
    jobs: int,
    progress: ProgressCallback | None,
) -> None:
    previous = {a.run_name: a.previous for a in actions if a.previous}

    def on_progress(event: Progress) -> None:
        # the first event about a run means its record exists: supersede what it replaces
        if event.run_name in previous:
            _supersede(backend, previous.pop(event.run_name), result)
        if event.message.startswith("exists already") and event.run_name not in result.existing:
            result.existing.append(event.run_name)
        if progress is not None:
            progress(event)

    records = backend.submit(
        [runs[a.run_name] for a in actions],
        attempts={a.run_name: a.attempt for a in actions},
        jobs=jobs,
        progress=on_progress,
    )
    for name in list(previous):
        _supersede(backend, previous.pop(name), result)
    latest = _latest(records)
    for action in actions:
        result.done.setdefault(action.kind, []).append(action.run_name)
        record = latest.get(action.run_name)
        if record is not None:
            result.outcomes[action.run_name] = record.status


def _latest(records: Sequence[RunRecord]) -> dict[str, RunRecord]:
    out: dict[str, RunRecord] = {}
    for record in records:
        if record.run_name not in out or record.attempt > out[record.run_name].attempt:
            out[record.run_name] = record
    return out
