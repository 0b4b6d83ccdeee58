"""A plan's actions linked to the runs they wait for, ordered, summarized per experiment, and
the plan's fingerprint and scope."""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

from himl_manifest.model import (
    CHANGING,
    IN_PROGRESS,
    SUBMITTING,
    UNSUCCESSFUL,
    ActionKind,
    Health,
    Lifecycle,
    RunRecord,
    RunStatus,
    checkpoint_source,
    cosmetic_view,
)
from himl_manifest.plan.model import Action, ExperimentStatus
from himl_manifest.records.select import upstream_run
from himl_manifest.spec import (
    RunSpec,
    canonical_json,
)

#: Version of the fingerprint's payload; bump it when what the fingerprint covers changes.
FINGERPRINT_VERSION = 3
#: Upstream actions a dependent run has to wait for (their checkpoint is not there yet).
_UPSTREAM_PENDING = frozenset(
    {ActionKind.CREATE, ActionKind.REPLACE, ActionKind.RESUME, ActionKind.RETRY, ActionKind.WAIT}
)


def link(actions: list[Action]) -> list[Action]:
    """Set ``depends_on`` of runs whose checkpoint source is a run that is not there yet, and
    ``blocked`` of those that would submit while their upstream run failed for good (kept:
    its retries are spent): no job starts without its input."""
    by_name = {action.run_name: action for action in actions if action.run is not None}
    linked = []
    for action in actions:
        upstream = upstream_run(action.run.spec) if action.run is not None else None
        source = by_name.get(upstream) if upstream else None
        if source is not None and source.kind in _UPSTREAM_PENDING:
            action = replace(action, depends_on=(source.run_name,))
        elif (
            source is not None
            and action.kind in SUBMITTING
            and source.kind == ActionKind.KEEP
            and source.observed_status in UNSUCCESSFUL
        ):
            action = replace(
                action,
                blocked=f"upstream run {source.run_name} ended {source.observed_status} "
                "(retries spent): retry it with --retry-failed or --replace it",
            )
        linked.append(action)
    return linked


def order_actions(actions: list[Action]) -> tuple[Action, ...]:
    """Topological by ``depends_on``, then by experiment name, seed and run name."""
    by_name = {action.run_name: action for action in actions}
    waiting_on = {
        action.run_name: {dep for dep in action.depends_on if dep in by_name} for action in actions
    }
    dependents: dict[str, list[str]] = defaultdict(list)
    for name, deps in waiting_on.items():
        for dep in deps:
            dependents[dep].append(name)
    ready = [_sort_key(a) for a in actions if not waiting_on[a.run_name]]
    heapq.heapify(ready)
    ordered: list[Action] = []
    while ready:
        name = heapq.heappop(ready)[-1]
        ordered.append(by_name[name])
        for child in dependents[name]:
            waiting_on[child].discard(name)
            if not waiting_on[child]:
                heapq.heappush(ready, _sort_key(by_name[child]))
    if len(ordered) != len(actions):  # a cycle: expand() rejects them, so never in practice
        done = {a.run_name for a in ordered}
        ordered += sorted((a for a in actions if a.run_name not in done), key=_sort_key)
    return tuple(ordered)


def _sort_key(action: Action) -> tuple[str, int, str]:
    return (action.experiment, action.seed, action.run_name)


def _health(statuses: Iterable[RunStatus | None]) -> Health:
    seen = {status for status in statuses if status is not None}
    if seen & {RunStatus.FAILED, RunStatus.CANCELLED}:
        return Health.FAILED
    if seen & IN_PROGRESS:
        return Health.RUNNING
    return Health.HEALTHY if seen else Health.NONE


def experiment_statuses(actions: Sequence[Action]) -> tuple[ExperimentStatus, ...]:
    """Per experiment: in sync (nothing to change, no orphans) and health, two separate axes."""
    grouped: dict[str, list[Action]] = defaultdict(list)
    for action in actions:
        grouped[action.experiment].append(action)
    statuses = []
    for experiment in sorted(grouped):
        group = grouped[experiment]
        current = [a for a in group if a.kind != ActionKind.ORPHAN] or group
        statuses.append(
            ExperimentStatus(
                experiment=experiment,
                in_sync=not any(a.kind in CHANGING or a.kind == ActionKind.ORPHAN for a in group),
                health=_health(a.observed_status for a in current),
                manifest_path=current[0].manifest_path,
            )
        )
    return tuple(statuses)


# --- fingerprint and scope --------------------------------------------------------------------


def _observed_facts(record: RunRecord) -> list[Any]:
    """What the planner reads of a record: all it uses of an active one; of history
    (superseded, archived) only what counts for attempt numbers, so history is never decoded."""
    if record.state != Lifecycle.ACTIVE:
        return [record.run_name, record.attempt, record.state, record.spec_hash]
    return [
        record.run_name,
        record.attempt,
        record.status,
        record.state,
        record.spec_hash,
        record.has_checkpoint,
        cosmetic_view(record.spec),
    ]


def fingerprint(
    desired: Iterable[RunSpec],
    observed: Iterable[RunRecord],
    *,
    retry_failed: bool = False,
    targets: Collection[str] | None = None,
    forced: Collection[tuple[str, int]] = (),
) -> str:
    """sha256 of what a plan is made from: a saved plan whose fingerprint no longer matches a
    fresh one is stale."""
    wanted = sorted(
        canonical_json(
            [
                run.run_name,
                run.spec_hash,
                run.manifest_path,
                cosmetic_view(run.spec),
                run.spec.get("retry") or {},
            ]
        )
        for run in desired
    )
    seen = sorted(canonical_json(_observed_facts(record)) for record in observed)
    header = canonical_json(
        {
            "fingerprint": FINGERPRINT_VERSION,
            "retry_failed": retry_failed,
            "targets": sorted(targets) if targets is not None else None,
            "replace": sorted([experiment, seed] for experiment, seed in forced),
        }
    )
    digest = hashlib.sha256(header.encode())
    for line in (*wanted, "--", *seen):
        digest.update(b"\n")
        digest.update(line.encode())
    return f"sha256:{digest.hexdigest()}"


def scope(desired: Sequence[RunSpec], targets: Collection[str] | None) -> frozenset[str] | None:
    """The experiments a targeted plan covers: the targets and, transitively, the experiments
    whose checkpoints they start from. ``None``: everything."""
    if targets is None:
        return None
    sources: dict[str, set[str]] = defaultdict(set)
    for run in desired:
        source = checkpoint_source(run.spec)
        if source is not None and source.experiment:
            sources[run.experiment].add(source.experiment)
    covered: set[str] = set()
    todo = list(targets)
    while todo:
        name = todo.pop()
        if name not in covered:
            covered.add(name)
            todo.extend(sources.get(name, ()))
    return frozenset(covered)
