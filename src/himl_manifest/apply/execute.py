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
required where the executor runs them here (local processes), optional elsewhere (``wait``).

No run starts without its input. A run whose checkpoint comes from a run of the same apply
goes in the same batch only when one executor runs both here (it starts the dependent once
its upstream completed); otherwise it is **deferred**: submitted in a later batch of this
apply once its upstream completed (waiting for an upstream elsewhere only with ``wait``), else
left for the next apply, and named in the summary. A run whose upstream failed is **blocked**
(the plan may say so already: its upstream failed for good) and never submitted.

When the executor stops a batch part way (:class:`~himl_manifest.backends.base.SubmissionStopped`:
a job refused, Ctrl-C), what was accepted is recorded like any other submission, the runs not
sent are named, and the accepted runs executed here are still waited for.

The runs of a plan must carry their provenance already (:mod:`himl_manifest.operations.apply`
gathers it from git before calling this).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from himl_manifest.backends.base import (
    Backend,
    ProgressCallback,
    SubmissionStopped,
    SubmitOutcome,
    Submitted,
)
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
from himl_manifest.records.select import latest_attempts

#: Statuses of a run that has ended.
_ENDED = frozenset({RunStatus.COMPLETED, *UNSUCCESSFUL})
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
    #: Submitted runs nobody waited for (they go on elsewhere): "submitted", not "running".
    not_waited: set[str] = field(default_factory=set)
    #: Runs left for a later apply: run name -> the upstream runs they wait for.
    deferred: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: Runs never submitted because their upstream failed: run name -> why.
    blocked: dict[str, str] = field(default_factory=dict)
    #: Runs of a batch the executor stopped before sending them, and why it stopped.
    not_sent: list[str] = field(default_factory=list)
    stopped: str = ""
    #: Ctrl-C stopped the submission or the waiting (the accepted runs go on).
    interrupted: bool = False
    #: Where each accepted run can be followed (an Azure ML job's studio page), when known.
    links: dict[str, str] = field(default_factory=dict)

    def count(self, kind: ActionKind) -> int:
        return len(self.done.get(kind, []))

    @property
    def failed(self) -> list[str]:
        return sorted(name for name, s in self.outcomes.items() if s in UNSUCCESSFUL)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.conflicts or self.blocked or self.not_sent or self.stopped)

    @property
    def waited(self) -> bool:
        return not self.not_waited

    def summary_line(self) -> str:
        """``Apply complete: 1 created, 2 resumed. Runs: 3 completed, 1 failed.``"""
        parts = [f"{n} {word}" for kind, word in _DONE if (n := self.count(kind))]
        if not parts:
            line = "No changes." if not (self.blocked or self.not_sent) else "Nothing applied."
        else:
            line = f"Apply {'complete' if self.ok else 'finished with failures'}: "
            line += ", ".join(parts) + "."
        if self.outcomes:
            line += f" Runs: {self._statuses()}."
        if self.conflicts:
            line += f" {len(self.conflicts)} not submitted (run name conflict)."
        if self.not_sent:
            line += f" {len(self.not_sent)} not sent."
        if self.deferred:
            line += f" {len(self.deferred)} deferred (waiting for their upstream run)."
        if self.blocked:
            line += f" {len(self.blocked)} blocked (upstream failed)."
        if self.orphans_left:
            line += f" {self.orphans_left} orphaned (archive them with --prune)."
        return line

    def _statuses(self) -> str:
        order = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED)
        statuses = Counter(self.outcomes.values())
        counted = [f"{statuses[s]} {s}" for s in order if statuses[s]]
        going = [name for name, s in self.outcomes.items() if s not in order]
        submitted = sum(1 for name in going if name in self.not_waited)
        if len(going) - submitted:
            counted.append(f"{len(going) - submitted} still running")
        if submitted:
            counted.append(f"{submitted} submitted")
        return ", ".join(counted)


def execute(
    plan: Plan,
    backend: Backend,
    *,
    prune: bool = False,
    wait: bool | None = None,
    progress: ProgressCallback | None = None,
) -> ApplyResult:
    """Carry out ``plan`` through ``backend``. Runs the executor runs here are always waited
    for (they run only while we wait); ``wait``: wait for the others (a remote service's) too,
    and submit the runs deferred behind them once they completed. Ctrl-C while waiting only
    for runs elsewhere stops the waiting (``interrupted``), never them."""
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
    result.blocked = {a.run_name: a.blocked for a in submitting if a.blocked}
    pending = [a for a in submitting if not a.blocked]
    ended = {
        a.run_name: a.observed_status
        for a in plan.actions
        if a.kind not in SUBMITTING and a.observed_status in _ENDED
    }
    _Batches(backend, result, bool(wait), progress, ended).run(pending)
    return result


@dataclass
class _Batches:
    """Submitting the runs of an apply in batches, each run once its upstream allows."""

    backend: Backend
    result: ApplyResult
    wait: bool
    progress: ProgressCallback | None
    #: run name -> its status once it ended (or as the plan observed it, for runs it keeps)
    ended: dict[str, RunStatus]

    def run(self, pending: list[Action]) -> None:
        while pending:
            batch, pending = self._ready(pending)
            if not batch:
                if not self._wait_for_upstream(pending):
                    break
                continue
            if not self._submit(batch):
                pending = []
            pending = self._unblocked(pending)
        for action in pending:
            self.result.deferred[action.run_name] = action.depends_on

    def _ready(self, pending: list[Action]) -> tuple[list[Action], list[Action]]:
        """The runs that can go now: each upstream completed, or in this batch on an executor
        that runs both here (it orders them itself). The plan's order is topological."""
        batch: list[Action] = []
        later: list[Action] = []
        for action in pending:
            if all(self._satisfied(action, up, batch) for up in action.depends_on):
                batch.append(action)
            else:
                later.append(action)
        return batch, later

    def _satisfied(self, action: Action, upstream: str, batch: list[Action]) -> bool:
        if self.ended.get(upstream) == RunStatus.COMPLETED:
            return True
        with_it = next((a for a in batch if a.run_name == upstream), None)
        if with_it is None or with_it.run is None or action.run is None:
            return False
        here = self.backend.capabilities_of(action.run).waits_locally
        same = self.backend.placement(with_it.run) == self.backend.placement(action.run)
        return here and same

    def _unblocked(self, pending: list[Action]) -> list[Action]:
        """``pending`` without the runs whose upstream ended without success (now blocked)."""
        still = []
        for action in pending:
            failed = [up for up in action.depends_on if self.ended.get(up) in UNSUCCESSFUL]
            if failed:
                self.result.blocked[action.run_name] = (
                    f"upstream run {failed[0]} ended {self.ended[failed[0]]}"
                )
            else:
                still.append(action)
        return still

    def _wait_for_upstream(self, pending: list[Action]) -> bool:
        """With ``wait``: wait for the upstream runs still going (submitted by an earlier
        apply); True when there is something new to look at."""
        going = sorted({up for a in pending for up in a.depends_on if up not in self.ended})
        if not self.wait or not going:
            return False
        return self._wait_for(going)

    def _submit(self, batch: list[Action]) -> bool:
        """Submit one batch and wait for what must (or may) be waited for; False when the
        apply stops here (the executor stopped the batch, or Ctrl-C)."""
        submitted, carry_on = _submit(self.backend, batch, self.result)
        names = [s.run_name for s in submitted if s.outcome != SubmitOutcome.CONFLICT]
        runs = {a.run_name: a.run for a in batch if a.run is not None}
        here = [n for n in names if self.backend.capabilities_of(runs[n]).waits_locally]
        elsewhere = [n for n in names if n not in here]
        records = {s.run_name: s.record for s in submitted if s.record is not None}
        for name in names:
            if name in records:
                self.result.outcomes[name] = records[name].status
                if records[name].url:
                    self.result.links[name] = str(records[name].url)
        if here and not self.result.interrupted:
            self._take(self.backend.wait(here, progress=self.progress))
        self.result.not_waited |= set(elsewhere)
        if elsewhere and self.wait and carry_on:
            carry_on = self._wait_for(elsewhere)
        return carry_on and not self.result.interrupted

    def _wait_for(self, names: list[str]) -> bool:
        """Wait for runs executed elsewhere; Ctrl-C stops the waiting (False), not them."""
        try:
            records = self.backend.wait(names, progress=self.progress)
        except KeyboardInterrupt:
            self.result.interrupted = True
            return False
        self.result.not_waited -= set(names)
        self._take(records)
        return True

    def _take(self, records: Sequence[RunRecord]) -> None:
        """How the runs waited for stand: the outcome of those this apply submitted, and
        which have ended (what their dependents look at)."""
        for name, record in latest_attempts(records).items():
            if name in self.result.outcomes:
                self.result.outcomes[name] = record.status
            if record.status in _ENDED:
                self.ended[name] = record.status


def _supersede(backend: Backend, run_name: str, result: ApplyResult) -> None:
    if run_name not in result.superseded:
        backend.set_state(run_name, Lifecycle.SUPERSEDED)
        result.superseded.append(run_name)


def _submit(
    backend: Backend, actions: Sequence[Action], result: ApplyResult
) -> tuple[list[Submitted], bool]:
    """Submit the runs; once accepted, supersede what they replace. Conflicts are collected.
    A batch the executor stopped part way is recorded as far as it went (False: stop here)."""
    runs = [a.run for a in actions if a.run is not None]
    carry_on = True
    try:
        submitted = backend.submit(runs, attempts={a.run_name: a.attempt for a in actions})
    except SubmissionStopped as stopped:
        submitted, carry_on = stopped.submitted, False
        result.not_sent += stopped.not_sent
        result.interrupted = stopped.interrupted
        result.stopped = "interrupted (Ctrl-C)" if stopped.interrupted else str(stopped.cause)
    by_name = {s.run_name: s for s in submitted}
    missing = sorted({a.run_name for a in actions} - set(by_name) - set(result.not_sent))
    if missing:
        raise StoreError(f"the executor gave no outcome for {', '.join(missing)}")
    for action in actions:
        outcome = by_name.get(action.run_name)
        if outcome is None:
            continue
        if outcome.outcome == SubmitOutcome.CONFLICT:
            result.conflicts.append(
                f"{action.run_name} attempt {outcome.attempt}: {outcome.message or 'conflict'}"
            )
            continue
        if outcome.outcome == SubmitOutcome.EXISTED:
            result.existing.append(action.run_name)
        result.done.setdefault(action.kind, []).append(action.run_name)
        if action.previous and action.previous != action.run_name:
            # what the run replaces (a replace, a resume) or what an earlier apply left live
            # beside it (a retry or a create after an apply stopped half way)
            _supersede(backend, action.previous, result)
    return submitted, carry_on
