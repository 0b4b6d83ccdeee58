"""Carrying out a plan: the only control-plane step with side effects.

:func:`execute` carries out a :class:`~himl_manifest.plan.model.Plan` through a backend (a run
store and its executor, :mod:`himl_manifest.backends.base`):

=========================  ======================================================================
action                     what happens
=========================  ======================================================================
update                     ``update_metadata``: description, tags, display name in place
orphan                     ``set_state(archived)``, only with ``prune``
create / retry             ``submit`` (a retry is the next attempt of the same run name)
replace / resume           ``submit``; once the new run is accepted, the run it replaces is
                           marked superseded (``set_state``), never deleted
keep / wait                nothing
=========================  ======================================================================

Submitting returns once the runs are accepted, with a typed outcome per run (created, existed
already with the same identity, or a conflict). Waiting for them to end is a separate step:
required where the executor runs them here (local processes), optional elsewhere.

The runs of a plan must carry their provenance already (:mod:`himl_manifest.operations.apply`
gathers it from git before calling this).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from himl_manifest.backends.base import Backend, ProgressCallback, SubmitOutcome, Submitted
from himl_manifest.errors import StoreError
from himl_manifest.model import (
    SUBMITTING,
    UNSUCCESSFUL,
    ActionKind,
    Lifecycle,
    RunRecord,
    RunStatus,
)
from himl_manifest.plan.model import Action, Plan

#: Past-tense phrases of the apply summary, in order.
_DONE = (
    (ActionKind.CREATE, "created"),
    (ActionKind.REPLACE, "replaced"),
    (ActionKind.RESUME, "resumed"),
    (ActionKind.RETRY, "retried"),
    (ActionKind.UPDATE, "updated"),
    (ActionKind.ORPHAN, "archived"),
)


@dataclass
class ApplyResult:
    """What an apply did: actions carried out per kind, and how the submitted runs ended."""

    done: dict[ActionKind, list[str]] = field(default_factory=dict)  # kind -> run names
    outcomes: dict[str, RunStatus] = field(default_factory=dict)  # submitted run -> status
    superseded: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)  # created meanwhile by another apply
    conflicts: list[str] = field(default_factory=list)  # "<run>: why" (nothing created)
    orphans_left: int = 0  # orphans seen but not archived (no --prune)
    waited: bool = True

    def count(self, kind: ActionKind) -> int:
        return len(self.done.get(kind, []))

    @property
    def failed(self) -> list[str]:
        return sorted(name for name, s in self.outcomes.items() if s in UNSUCCESSFUL)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.conflicts

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
            order = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
            counted = [f"{statuses[s]} {s}" for s in order if statuses[s]]
            others = sum(n for s, n in statuses.items() if s not in order)
            if others:
                counted.append(f"{others} {'still running' if self.waited else 'submitted'}")
            line += f" Runs: {', '.join(counted)}."
        if self.conflicts:
            line += f" {len(self.conflicts)} not submitted (run name conflict)."
        if self.orphans_left:
            line += f" {self.orphans_left} orphaned (archive them with --prune)."
        return line


def execute(
    plan: Plan,
    backend: Backend,
    *,
    prune: bool = False,
    wait: bool | None = None,
    progress: ProgressCallback | None = None,
) -> ApplyResult:
    """Carry out ``plan`` through ``backend``. Runs the executor runs here are always waited
    for (they run only while we wait); ``wait``: wait for the others (a remote service's) too."""
    result = ApplyResult()
    submitting = [a for a in plan.actions if a.kind in SUBMITTING and a.run is not None]
    updates = [a for a in plan.actions if a.kind == ActionKind.UPDATE and a.run is not None]
    orphans = [a for a in plan.actions if a.kind == ActionKind.ORPHAN]

    for action in updates:
        assert action.run is not None
        backend.update_metadata(action.run_name, action.run)
        result.done.setdefault(ActionKind.UPDATE, []).append(action.run_name)
        if action.previous:
            _supersede(backend, action.previous, result)
    if prune:
        for action in orphans:
            backend.set_state(action.run_name, Lifecycle.ARCHIVED)
            result.done.setdefault(ActionKind.ORPHAN, []).append(action.run_name)
    else:
        result.orphans_left = len(orphans)
    if not submitting:
        return result
    submitted = _submit(backend, submitting, result)
    result.waited = bool(wait) or backend.capabilities.waits_locally
    names = [s.run_name for s in submitted if s.outcome != SubmitOutcome.CONFLICT]
    if result.waited:
        records = backend.wait(names, progress=progress)
    else:
        records = [s.record for s in submitted if s.record is not None]
    latest = _latest(records)
    for name in names:
        if name in latest:
            result.outcomes[name] = latest[name].status
    return result


def _supersede(backend: Backend, run_name: str, result: ApplyResult) -> None:
    if run_name not in result.superseded:
        backend.set_state(run_name, Lifecycle.SUPERSEDED)
        result.superseded.append(run_name)


def _submit(backend: Backend, actions: Sequence[Action], result: ApplyResult) -> list[Submitted]:
    """Submit the runs; once accepted, supersede what they replace. Conflicts are collected."""
    runs = [a.run for a in actions if a.run is not None]
    submitted = backend.submit(runs, attempts={a.run_name: a.attempt for a in actions})
    by_name = {s.run_name: s for s in submitted}
    missing = sorted({a.run_name for a in actions} - set(by_name))
    if missing:
        raise StoreError(f"the executor gave no outcome for {', '.join(missing)}")
    for action in actions:
        outcome = by_name[action.run_name]
        if outcome.outcome == SubmitOutcome.CONFLICT:
            result.conflicts.append(
                f"{action.run_name} attempt {outcome.attempt}: {outcome.message or 'conflict'}"
            )
            continue
        if outcome.outcome == SubmitOutcome.EXISTED:
            result.existing.append(action.run_name)
        result.done.setdefault(action.kind, []).append(action.run_name)
        if action.previous and action.kind in (ActionKind.REPLACE, ActionKind.RESUME):
            _supersede(backend, action.previous, result)
    return submitted


def _latest(records: Sequence[RunRecord]) -> dict[str, RunRecord]:
    out: dict[str, RunRecord] = {}
    for record in records:
        if record.run_name not in out or record.attempt > out[record.run_name].attempt:
            out[record.run_name] = record
    return out
