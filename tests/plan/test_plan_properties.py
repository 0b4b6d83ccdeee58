"""Property tests: whatever the manifests and the history, re-planning right after applying a
plan with the real executor (over the in-memory backend) gives no changes but the runs the
apply deferred. tests/apply/test_convergence.py holds the local and Azure ML backends to it."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plan_helpers import apply_plan, experiment, runs, unsettled

from himl_manifest.apply.execute import ApplyResult
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.model import CHANGING, IN_PROGRESS, ActionKind, RunStatus
from himl_manifest.plan.model import Plan
from himl_manifest.plan.planner import plan
from himl_manifest.spec import RunSpec

NAMES = ["a", "b", "c", "d"]

# The fields a manifest edit may touch, and their values.
FIELDS = {
    "seeds": st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True),
    "max_epochs": st.sampled_from([1, 5, 10, 20]),
    "description": st.sampled_from([None, "first", "second"]),
    "lr": st.sampled_from([None, 0.1, 0.2]),
    "on_failure": st.booleans(),
    "max_attempts": st.integers(1, 3),
    "upstream": st.sampled_from([None, 0, 1, 2]),  # index of an earlier experiment
}
DEFAULTS: dict[str, Any] = {
    "seeds": [0],
    "max_epochs": 5,
    "description": None,
    "lr": None,
    "on_failure": False,
    "max_attempts": 3,
    "upstream": None,
}
experiment_fields = st.fixed_dictionaries(FIELDS)
# A manifest set: which experiments exist, and their fields.
manifests = st.dictionaries(st.sampled_from(NAMES), experiment_fields, max_size=len(NAMES))
# One edit of a manifest set: (experiment, field or "remove", value).
edits = st.one_of(
    st.tuples(st.sampled_from(NAMES), st.just("remove"), st.none()),
    *(st.tuples(st.sampled_from(NAMES), st.just(key), values) for key, values in FIELDS.items()),
)
Edit = tuple[str, str, Any]


def edited(manifest_set: dict[str, dict[str, Any]], edit: Edit) -> dict[str, dict[str, Any]]:
    name, key, value = edit
    out = {n: dict(fields) for n, fields in manifest_set.items()}
    if key == "remove":
        out.pop(name, None)
    else:
        out.setdefault(name, dict(DEFAULTS))[key] = value
    return out


outcomes = st.sampled_from(
    [
        RunStatus.COMPLETED,
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.RUNNING,
        RunStatus.QUEUED,
    ]
)


def build(manifest_set: dict[str, dict[str, Any]]) -> list[RunSpec]:
    names = sorted(manifest_set)
    experiments = []
    for index, name in enumerate(names):
        fields = manifest_set[name]
        doc: dict[str, Any] = {
            "seeds": fields["seeds"],
            "trainer": {"max_epochs": fields["max_epochs"]},
            "retry": {"on_failure": fields["on_failure"], "max_attempts": fields["max_attempts"]},
        }
        if fields["description"] is not None:
            doc["description"] = fields["description"]
        if fields["lr"] is not None:
            doc["params"] = {"lr": fields["lr"]}
        upstream = fields["upstream"]
        if upstream is not None and upstream < index:
            doc["checkpoint"] = {"source": {"experiment": names[upstream]}}
        experiments.append(experiment(name, **doc))
    return runs(*experiments)


def finish_some(backend: MemoryBackend, rng: random.Random) -> None:
    """Time passes: some queued or running runs end."""
    for record in backend.records():
        if record.status in IN_PROGRESS and rng.random() < 0.5:
            status = rng.choice([RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED])
            backend.finish(record.run_name, status, checkpoint=rng.random() < 0.7)


def settle(
    backend: MemoryBackend, manifest_set: dict[str, dict[str, Any]], retry_failed: bool
) -> tuple[Plan, ApplyResult]:
    """Plan, apply with outcomes that do not fail, re-plan."""
    desired = build(manifest_set)
    applied = apply_plan(plan(desired, backend.list_runs(), retry_failed=retry_failed), backend)
    return plan(desired, backend.list_runs(), retry_failed=retry_failed), applied


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    start=manifests,
    steps=st.lists(edits, min_size=1, max_size=8),
    seed=st.integers(0, 2**16),
    retry_failed=st.booleans(),
)
def test_replanning_after_a_series_of_edits_gives_no_changes(
    start: dict[str, dict[str, Any]], steps: list[Edit], seed: int, retry_failed: bool
) -> None:
    """Edits one field at a time (the realistic history: resumes, updates, seeds added)."""
    rng = random.Random(seed)
    statuses = [
        RunStatus.COMPLETED,
        RunStatus.COMPLETED,
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.RUNNING,
    ]
    backend = MemoryBackend(outcome=lambda run, attempt: rng.choice(statuses))
    manifest_set = start
    for edit in steps:
        apply_plan(plan(build(manifest_set), backend.list_runs()), backend)
        finish_some(backend, rng)
        manifest_set = edited(manifest_set, edit)
    backend.outcome = lambda run, attempt: rng.choice([RunStatus.COMPLETED, RunStatus.RUNNING])
    again, applied = settle(backend, manifest_set, retry_failed)
    assert unsettled(again, applied) == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(manifests, min_size=0, max_size=4),
    final=manifests,
    seed=st.integers(0, 2**16),
    retry_failed=st.booleans(),
)
def test_replanning_after_apply_gives_no_changes(
    history: list[dict[str, dict[str, Any]]],
    final: dict[str, dict[str, Any]],
    seed: int,
    retry_failed: bool,
) -> None:
    rng = random.Random(seed)
    backend = MemoryBackend(
        outcome=lambda run, attempt: rng.choice(
            [*(RunStatus.COMPLETED,) * 3, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.RUNNING]
        )
    )
    for manifest_set in history:
        desired = build(manifest_set)
        apply_plan(plan(desired, backend.list_runs()), backend, prune=rng.random() < 0.7)
        finish_some(backend, rng)
    backend.outcome = lambda run, attempt: rng.choice(
        [RunStatus.COMPLETED, RunStatus.COMPLETED, RunStatus.RUNNING]
    )
    again, applied = settle(backend, final, retry_failed)
    assert unsettled(again, applied) == []
    desired = build(final)
    assert sorted((a.experiment, a.seed) for a in again.actions) == sorted(
        (r.experiment, r.seed) for r in desired
    )
    held = {a.experiment for a in again.actions if a.blocked or a.run_name in applied.deferred}
    assert all(s.in_sync for s in again.experiments if s.experiment not in held)


@settings(max_examples=40, deadline=None)
@given(history=st.lists(manifests, min_size=1, max_size=4), seed=st.integers(0, 2**16))
def test_failures_during_apply_only_leave_retries(
    history: list[dict[str, dict[str, Any]]], seed: int
) -> None:
    """When the runs of the last apply fail, the re-plan changes nothing but retries them."""
    rng = random.Random(seed)
    backend = MemoryBackend(
        outcome=lambda run, attempt: rng.choice(
            [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]
        )
    )
    for manifest_set in history:
        desired = build(manifest_set)
        applied = apply_plan(plan(desired, backend.list_runs()), backend)
    again = plan(desired, backend.list_runs())
    # runs held back behind a failed upstream are blocked (or deferred), not submitted
    changing = [
        a
        for a in again.actions
        if (a.kind in CHANGING or a.kind == ActionKind.ORPHAN)
        and not a.blocked
        and a.run_name not in applied.deferred
        and a.run_name not in applied.blocked
    ]
    assert all(a.kind == ActionKind.RETRY for a in changing), [(a.kind, a.reason) for a in changing]


@settings(max_examples=40, deadline=None)
@given(history=st.lists(manifests, min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_every_desired_run_gets_exactly_one_action_and_order_respects_dependencies(
    history: list[dict[str, dict[str, Any]]], seed: int
) -> None:
    rng = random.Random(seed)
    backend = MemoryBackend(
        outcome=lambda run, attempt: rng.choice(
            [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.RUNNING]
        )
    )
    for manifest_set in history:
        desired = build(manifest_set)
        result = plan(desired, backend.list_runs())
        keys = [(a.experiment, a.seed) for a in result.actions if a.kind != ActionKind.ORPHAN]
        assert sorted(keys) == sorted((r.experiment, r.seed) for r in desired)
        position = {a.run_name: i for i, a in enumerate(result.actions)}
        for action in result.actions:
            for upstream in action.depends_on:
                assert position[upstream] < position[action.run_name]
        shuffled = list(backend.list_runs())
        rng.shuffle(shuffled)
        assert plan(desired, shuffled) == result
        apply_plan(result, backend)
