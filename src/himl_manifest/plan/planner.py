"""The planner: desired run specs x observed run records -> a :class:`~.model.Plan`.

A pure function (no I/O, no clock) that matches in memory, with dictionaries built once over
the records of one bulk read, so its cost is linear in the number of runs and records.

How one desired run (one experiment and seed) is decided, DESIGN.md decision 3:

1. A live record carries its run name (same identity): by the status of its latest attempt,
   ``keep`` (completed), ``update`` (completed, only cosmetic fields differ), ``wait`` (queued or
   running), ``retry`` (cancelled: always; failed: with ``--retry-failed`` or
   ``retry.on_failure``; both below ``retry.max_attempts``) or ``keep`` with a reason (failed
   and not retried).
2. Else a live record of the same experiment and seed has another identity: ``wait`` while it is
   queued or running, ``resume`` when the one run-affecting change is a larger
   ``trainer.max_epochs`` and it has a checkpoint, else ``replace``. A completed record made
   under the previous hash version (``v1``) whose ``v1`` hash is the desired run's
   (:attr:`RunSpec.legacy_hash`) still matches its manifest: ``keep``, saying so.
3. Else ``create``.

``--replace`` (``forced``: experiment and seed pairs) turns what would be kept, updated,
retried or resumed into ``replace`` with the reason "replace requested": a run in sync gets a
new attempt of the same run (same name and identity), run from scratch.

Live records whose experiment and seed are no longer desired are ``orphan``. Superseded and
archived records are history: they only count for attempt numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from himl_manifest.model import (
    IN_PROGRESS,
    ActionKind,
    Lifecycle,
    RunRecord,
    RunStatus,
    cosmetic_view,
)
from himl_manifest.plan.diffs import (
    diff,
    flatten,
    record_identity,
    retry_policy,
)
from himl_manifest.plan.model import Action, FieldChange, Plan
from himl_manifest.plan.order import experiment_statuses, fingerprint, link, order_actions, scope
from himl_manifest.spec import (
    HASH_VERSION,
    LEGACY_HASH_VERSION,
    RunSpec,
    hash_version,
)

_MAX_EPOCHS = "trainer.max_epochs"
#: Field-change paths under this prefix are code identities (``code.identity.myproj/``).
CODE_IDENTITY = "code.identity."
REPLACE_REQUESTED = "replace requested"

Key = tuple[str, int]
#: (experiment, seed, fold): one run of the manifests (fold None without cross-validation).
RunKey = tuple[str, int, int | None]
# --- the observed side, indexed once ----------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """Dictionaries over one bulk read of the store."""

    latest: dict[str, RunRecord]  # run name -> latest live attempt
    max_attempt: dict[str, int]  # run name -> highest attempt in any state
    by_key: dict[RunKey, dict[str, RunRecord]]  # (experiment, seed, fold) -> name -> latest live
    #: run name -> attempts that never started (they spend no ``retry.max_attempts``)
    unstarted: dict[str, int] = field(default_factory=dict)

    @classmethod
    def index(cls, records: Iterable[RunRecord]) -> Observed:
        latest: dict[str, RunRecord] = {}
        max_attempt: dict[str, int] = {}
        unstarted: dict[str, int] = defaultdict(int)
        for record in records:
            name = record.run_name
            if record.never_started:
                unstarted[name] += 1
            if record.attempt > max_attempt.get(name, 0):
                max_attempt[name] = record.attempt
            if record.state != Lifecycle.ACTIVE:
                continue
            current = latest.get(name)
            if current is None or record.attempt > current.attempt:
                latest[name] = record
        by_key: dict[RunKey, dict[str, RunRecord]] = defaultdict(dict)
        for name, record in latest.items():
            by_key[(record.experiment, record.seed, record.fold)][name] = record
        return cls(latest, max_attempt, dict(by_key), dict(unstarted))

    def next_attempt(self, run_name: str) -> int:
        return self.max_attempt.get(run_name, 0) + 1

    def others(self, run: RunSpec) -> list[RunRecord]:
        """Live runs of the same experiment, seed and fold under another name, newest first."""
        found = self.by_key.get((run.experiment, run.seed, run.fold), {})
        others = [record for name, record in found.items() if name != run.run_name]
        return sorted(others, key=_recency, reverse=True)


def _recency(record: RunRecord) -> tuple[float, int, str]:
    return (record.start_time or 0.0, record.attempt, record.run_name)


# --- deciding one run -------------------------------------------------------------------------


def _base(run: RunSpec, **fields: Any) -> Action:
    return Action(
        experiment=run.experiment,
        seed=run.seed,
        run_name=run.run_name,
        run=run,
        manifest_path=run.manifest_path,
        **fields,
    )


def _failure_note(status: str, attempt: int, used: int, max_attempts: int) -> str:
    what = "failed" if status == RunStatus.FAILED else "was cancelled"
    if used >= max_attempts:
        return (
            f"attempt {attempt} {what}; not retried: {used} of retry.max_attempts="
            f"{max_attempts} used (raise retry.max_attempts, or pass --retry-failed, to try "
            "again)"
        )
    return (
        f"attempt {attempt} failed; not retried: pass --retry-failed or set "
        "retry.on_failure: true to retry it"
    )


def _existing(run: RunSpec, latest: RunRecord, observed: Observed, retry_failed: bool) -> Action:
    """The run exists with this identity: decide by the status of its latest attempt."""
    status = latest.status
    cosmetic = diff(cosmetic_view(latest.spec), cosmetic_view(run.spec))
    current = {"attempt": latest.attempt, "observed_status": status}
    if status in IN_PROGRESS:
        later = "; its metadata is updated once it finishes" if cosmetic else ""
        reason = f"attempt {latest.attempt} is {status}: nothing to do until it finishes{later}"
        return _base(run, kind=ActionKind.WAIT, reason=reason, changes=cosmetic, **current)
    if status in (RunStatus.FAILED, RunStatus.CANCELLED):
        on_failure, max_attempts = retry_policy(run)
        retryable = status == RunStatus.CANCELLED or retry_failed or on_failure
        used = latest.attempt - observed.unstarted.get(run.run_name, 0)
        if retryable and (used < max_attempts or retry_failed):
            attempt = observed.next_attempt(run.run_name)
            why = {RunStatus.CANCELLED: "was cancelled (interrupted)", RunStatus.FAILED: "failed"}[
                status
            ]
            switch = (
                ""
                if status == RunStatus.CANCELLED
                else (" (--retry-failed)" if retry_failed else " (retry.on_failure)")
            )
            bound = f" of at most {max_attempts}"
            if used != latest.attempt:
                bound = f" ({used} of retry.max_attempts={max_attempts} used: attempts that never"
                bound += " started do not count)"
            if used >= max_attempts:
                bound = f", past retry.max_attempts={max_attempts}"
            reason = f"attempt {latest.attempt} {why}: retry{switch} as attempt {attempt}{bound}"
            retried = replace(run, resume_from=latest.resume_from)
            return _base(
                retried,
                kind=ActionKind.RETRY,
                reason=reason,
                changes=cosmetic,
                attempt=attempt,
                observed_status=status,
            )
        note = _failure_note(status, latest.attempt, used, max_attempts)
        if cosmetic:
            reason = f"cosmetic fields changed ({_paths(cosmetic)}); {note}"
            return _base(run, kind=ActionKind.UPDATE, reason=reason, changes=cosmetic, **current)
        return _base(run, kind=ActionKind.KEEP, reason=note, **current)
    if status != RunStatus.COMPLETED:
        return _base(
            run, kind=ActionKind.KEEP, reason=f"unknown status {status!r}: left alone", **current
        )
    if cosmetic:
        reason = f"cosmetic fields changed ({_paths(cosmetic)}): update in place"
        return _base(run, kind=ActionKind.UPDATE, reason=reason, changes=cosmetic, **current)
    return _base(run, kind=ActionKind.KEEP, reason="completed and in sync", **current)


def _paths(changes: Sequence[FieldChange]) -> str:
    """The changed fields, by name; code identities as ``code of myproj/``."""
    return ", ".join(
        f"code of {change.path[len(CODE_IDENTITY) :]}"
        if change.path.startswith(CODE_IDENTITY)
        else change.path
        for change in changes
    )


def _is_resume(changes: Sequence[FieldChange]) -> bool:
    """The one run-affecting change is a larger ``trainer.max_epochs``."""
    if len(changes) != 1 or changes[0].path != _MAX_EPOCHS:
        return False
    old, new = changes[0].old, changes[0].new
    valid = all(isinstance(v, int) and not isinstance(v, bool) for v in (old, new))
    return valid and new > old


def _identity_changes(old: RunRecord, run: RunSpec) -> tuple[FieldChange, ...]:
    changes = diff(record_identity(old, run.conda_sha256), run.identity())
    return changes or (FieldChange("spec_hash", old.spec_hash, run.spec_hash),)


def _changed(run: RunSpec, old: RunRecord, observed: Observed) -> Action:
    """A live run of the same experiment and seed has another identity."""
    identity = _identity_changes(old, run)
    changes = identity + diff(cosmetic_view(old.spec), cosmetic_view(run.spec))
    common = {
        "changes": changes,
        "previous": old.run_name,
        "attempt": observed.next_attempt(run.run_name),
        "observed_status": old.status,
    }
    resume_only = _is_resume(identity)
    if old.status in IN_PROGRESS:
        then = "resuming from it" if resume_only and old.has_checkpoint else "replacing it"
        reason = f"waiting for the previous run {old.run_name} ({old.status}) before {then}"
        return _base(run, kind=ActionKind.WAIT, reason=reason, **common)
    if resume_only and old.has_checkpoint:
        epochs = f"{identity[0].old} → {identity[0].new}"
        reason = f"max_epochs raised ({epochs}): continue from the checkpoint of {old.run_name}"
        resumed = replace(run, resume_from=old.run_name)
        return _base(resumed, kind=ActionKind.RESUME, reason=reason, **common)
    if resume_only:
        reason = (
            f"max_epochs raised, but the run store records no checkpoint for {old.run_name} "
            "(resuming needs one): a new run replaces it"
        )
    else:
        reason = f"run-affecting fields changed ({_paths(identity)}): a new run replaces it"
    version = hash_version(old.spec_hash)
    if version != HASH_VERSION:
        reason = f"{old.run_name} was recorded under identity {version or '?'}; {reason}"
    return _base(run, kind=ActionKind.REPLACE, reason=reason, **common)


def _legacy_match(run: RunSpec, old: RunRecord) -> bool:
    """``old`` was recorded under the previous hash version, and that version's hash of the
    desired run is its hash: nothing the manifest says has changed since."""
    if hash_version(old.spec_hash) != LEGACY_HASH_VERSION:
        return False
    return run.legacy_hash == old.spec_hash


def _legacy_keep(run: RunSpec, old: RunRecord) -> Action | None:
    """A completed ``v1`` run that still matches its manifest (cosmetic fields included) is
    kept; anything else about it is decided as a change (a new run under the current
    identity)."""
    if not _legacy_match(run, old) or old.status != RunStatus.COMPLETED:
        return None
    if diff(cosmetic_view(old.spec), cosmetic_view(run.spec)):
        return None
    reason = (
        f"completed and in sync as {old.run_name}, recorded under identity "
        f"{LEGACY_HASH_VERSION} (before code was part of a run's identity): kept; "
        f"`--replace {run.experiment}:{run.seed}` reruns it under the current identity"
    )
    return _base(
        run,
        kind=ActionKind.KEEP,
        reason=reason,
        previous=old.run_name,
        attempt=old.attempt,
        observed_status=old.status,
    )


def _forced(run: RunSpec, observed: Observed) -> Action:
    """``--replace``: a new run for this experiment and seed, whatever the plan would say,
    except while a run of it is queued or running (a run in progress is never replaced)."""
    latest = observed.latest.get(run.run_name)
    others = observed.others(run)
    busy = [r for r in ([latest] if latest else []) + others if r.status in IN_PROGRESS]
    if busy:
        action = _decide(run, observed, retry_failed=False)
        if action.kind == ActionKind.WAIT:
            why = f"{REPLACE_REQUESTED}, but {action.reason}"
            return replace(action, reason=why)
        return action
    fresh = replace(run, resume_from=None)
    old = others[0] if others else None
    if latest is not None:
        attempt = observed.next_attempt(run.run_name)
        reason = (
            f"{REPLACE_REQUESTED}: attempt {attempt} of {run.run_name} runs from scratch "
            f"(attempt {latest.attempt}, {latest.status}, stays in the store)"
        )
        return _base(
            fresh,
            kind=ActionKind.REPLACE,
            reason=reason,
            changes=diff(cosmetic_view(latest.spec), cosmetic_view(run.spec)),
            previous=old.run_name if old is not None else None,
            attempt=attempt,
            observed_status=latest.status,
        )
    if old is not None:
        identity = _identity_changes(old, run)
        changed = "" if _legacy_match(run, old) else f" (run-affecting fields: {_paths(identity)})"
        return _base(
            fresh,
            kind=ActionKind.REPLACE,
            reason=f"{REPLACE_REQUESTED}: a new run replaces {old.run_name}{changed}",
            changes=identity + diff(cosmetic_view(old.spec), cosmetic_view(run.spec)),
            previous=old.run_name,
            attempt=observed.next_attempt(run.run_name),
            observed_status=old.status,
        )
    action = _decide(run, observed, retry_failed=False)
    return replace(action, reason=f"{action.reason} ({REPLACE_REQUESTED}: nothing to replace)")


def _finish_interrupted(action: Action, latest: RunRecord, leftover: RunRecord) -> Action:
    """The desired run exists, but an older live run of the same seed was never superseded
    (an apply stopped between submitting the new run and marking the old one)."""
    if leftover.status in IN_PROGRESS or action.kind == ActionKind.WAIT:
        return action
    if action.kind in (ActionKind.UPDATE, ActionKind.RETRY):
        return replace(action, previous=leftover.run_name)
    assert action.run is not None
    kind = ActionKind.RESUME if latest.resume_from == leftover.run_name else ActionKind.REPLACE
    reason = (
        f"an earlier apply stopped half way: {leftover.run_name} is still live beside "
        f"{action.run_name}; mark it superseded ({action.reason})"
    )
    return replace(
        action,
        kind=kind,
        reason=reason,
        run=replace(action.run, resume_from=latest.resume_from),
        previous=leftover.run_name,
        changes=_identity_changes(leftover, action.run),
    )


def _decide(run: RunSpec, observed: Observed, retry_failed: bool) -> Action:
    latest = observed.latest.get(run.run_name)
    others = observed.others(run)
    if latest is not None:
        action = _existing(run, latest, observed, retry_failed)
        return _finish_interrupted(action, latest, others[0]) if others else action
    if others:
        return _legacy_keep(run, others[0]) or _changed(run, others[0], observed)
    attempt = observed.next_attempt(run.run_name)
    earlier = f" (attempts 1-{attempt - 1} are archived or superseded)" if attempt > 1 else ""
    fold = "" if run.fold is None else f" fold {run.fold}"
    reason = f"no run of {run.experiment} seed {run.seed}{fold} exists{earlier}"
    return _base(run, kind=ActionKind.CREATE, reason=reason, attempt=attempt)


def _orphans(desired: Sequence[RunSpec], observed: Observed) -> list[Action]:
    wanted_keys = {(run.experiment, run.seed, run.fold) for run in desired}
    wanted_seeds = {(run.experiment, run.seed) for run in desired}
    wanted_experiments = {run.experiment for run in desired}
    actions = []
    for (experiment, seed, fold), records in observed.by_key.items():
        if (experiment, seed, fold) in wanted_keys:
            continue
        if (experiment, seed) in wanted_seeds:
            reason = (
                f"{experiment} now runs cross-validation folds: its run of seed {seed} without "
                "folds is no longer wanted"
                if fold is None
                else f"fold {fold} of seed {seed} is no longer in the folds of {experiment}"
            )
        elif experiment in wanted_experiments:
            reason = f"seed {seed} is no longer in the seeds of {experiment}"
        else:
            reason = f"experiment {experiment} is no longer in the manifests"
        for name, record in records.items():
            actions.append(
                Action(
                    kind=ActionKind.ORPHAN,
                    experiment=experiment,
                    seed=seed,
                    run_name=name,
                    reason=f"{reason}: archived by apply --prune",
                    attempt=record.attempt,
                    manifest_path=record.manifest_path,
                    observed_status=record.status,
                )
            )
    return actions


# --- the planner ------------------------------------------------------------------------------


def plan(
    desired: Sequence[RunSpec],
    observed: Sequence[RunRecord],
    *,
    retry_failed: bool = False,
    targets: Collection[str] | None = None,
    forced: Collection[Key] = (),
    warnings: Sequence[str] = (),
) -> Plan:
    """Desired runs (from :func:`~himl_manifest.spec.expand`) x observed records (one
    ``backend.list_runs()``) -> the actions that bring the store in line, in execution order.

    ``targets`` limits the plan to those experiments (and the experiments they start from);
    ``retry_failed`` retries failed runs whatever their ``retry.on_failure`` says; ``forced``
    (experiment, seed) pairs get a new run (``--replace``); ``warnings`` (from expanding the
    manifests) are carried on the plan, with one about runs kept under an older identity.
    """
    covered = scope(desired, targets)
    if covered is not None:
        desired = [run for run in desired if run.experiment in covered]
        observed = [record for record in observed if record.experiment in covered]
    index = Observed.index(observed)
    wanted = frozenset(forced)
    actions = [
        _forced(run, index)
        if (run.experiment, run.seed) in wanted
        else _decide(run, index, retry_failed)
        for run in desired
    ]
    actions += _orphans(desired, index)
    ordered = order_actions(link(actions))
    return Plan(
        actions=ordered,
        fingerprint=fingerprint(
            desired, observed, retry_failed=retry_failed, targets=targets, forced=wanted
        ),
        experiments=experiment_statuses(ordered),
        meta={
            "retry_failed": retry_failed,
            "targets": sorted(targets) if targets is not None else None,
        },
        warnings=(*warnings, *_legacy_warning(ordered)),
    )


def _legacy_warning(actions: Sequence[Action]) -> list[str]:
    kept = [
        a
        for a in actions
        if a.kind == ActionKind.KEEP and a.previous is not None and a.previous != a.run_name
    ]
    if not kept:
        return []
    noun = "run was" if len(kept) == 1 else "runs were"
    return [
        f"{len(kept)} {noun} recorded under identity {LEGACY_HASH_VERSION}, before a run's "
        "identity covered its code and its conda file's meaning: kept while their manifests "
        "match them; `himl apply --replace EXPERIMENT` reruns them under the current identity"
    ]


__all__ = [
    "Observed",
    "diff",
    "experiment_statuses",
    "fingerprint",
    "flatten",
    "plan",
    "record_identity",
    "scope",
]
