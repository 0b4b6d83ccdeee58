"""The planner case by case (pip-tools' test_sync.py style): desired x observed -> actions."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
from plan_helpers import experiment, record, run_of, runs

from himl_manifest.model import ActionKind, Health, Lifecycle, RunRecord, RunStatus
from himl_manifest.plan.diffs import diff, flatten
from himl_manifest.plan.model import Action, FieldChange, Plan
from himl_manifest.plan.order import fingerprint
from himl_manifest.plan.planner import plan
from himl_manifest.spec import RunSpec

BASE = run_of("exp")


def only(result: Plan) -> Action:
    assert len(result.actions) == 1, result.actions
    return result.actions[0]


# --- one run, one history: the table ---------------------------------------------------------

#: (id, desired manifest fields, observed history as (fields, status, attempt, checkpoint),
#:  planner options, expected kind, expected changed paths)
History = list[tuple[dict[str, Any], str, int, bool]]
CASES: list[tuple[str, dict[str, Any], History, dict[str, Any], str, list[str]]] = [
    ("nothing observed", {}, [], {}, ActionKind.CREATE, []),
    ("completed, same", {}, [({}, RunStatus.COMPLETED, 1, True)], {}, ActionKind.KEEP, []),
    ("queued", {}, [({}, RunStatus.QUEUED, 1, False)], {}, ActionKind.WAIT, []),
    ("running", {}, [({}, RunStatus.RUNNING, 1, False)], {}, ActionKind.WAIT, []),
    (
        "description edited",
        {"description": "new"},
        [({"description": "old"}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.UPDATE,
        ["description"],
    ),
    (
        "tag added",
        {"tags": {"team": "a", "purpose": "x"}},
        [({"tags": {"team": "a"}}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.UPDATE,
        ["tags.purpose"],
    ),
    (
        "display name",
        {"tracking": {"display_name": "b"}},
        [({"tracking": {"display_name": "a"}}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.UPDATE,
        ["tracking.display_name"],
    ),
    (
        "retry policy is neither identity nor cosmetic",
        {"retry": {"on_failure": True, "max_attempts": 5}},
        [({}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.KEEP,
        [],
    ),
    (
        "cancelled: always retried",
        {},
        [({}, RunStatus.CANCELLED, 1, True)],
        {},
        ActionKind.RETRY,
        [],
    ),
    (
        "cancelled twice",
        {},
        [({}, RunStatus.CANCELLED, 1, True), ({}, RunStatus.CANCELLED, 2, True)],
        {},
        ActionKind.RETRY,
        [],
    ),
    (
        "cancelled max_attempts times",
        {},
        [
            ({}, RunStatus.CANCELLED, 1, True),
            ({}, RunStatus.CANCELLED, 2, True),
            ({}, RunStatus.CANCELLED, 3, True),
        ],
        {},
        ActionKind.KEEP,
        [],
    ),
    (
        "failed: not retried by default",
        {},
        [({}, RunStatus.FAILED, 1, False)],
        {},
        ActionKind.KEEP,
        [],
    ),
    (
        "failed + --retry-failed",
        {},
        [({}, RunStatus.FAILED, 1, False)],
        {"retry_failed": True},
        ActionKind.RETRY,
        [],
    ),
    (
        "failed + retry.on_failure",
        {"retry": {"on_failure": True}},
        [({"retry": {"on_failure": True}}, RunStatus.FAILED, 1, False)],
        {},
        ActionKind.RETRY,
        [],
    ),
    (
        "failed at max_attempts: --retry-failed still retries",
        {"retry": {"max_attempts": 2}},
        [({}, RunStatus.FAILED, 1, False), ({}, RunStatus.FAILED, 2, False)],
        {"retry_failed": True},
        ActionKind.RETRY,
        [],
    ),
    (
        "failed, cosmetic edit",
        {"description": "b"},
        [({"description": "a"}, RunStatus.FAILED, 1, False)],
        {},
        ActionKind.UPDATE,
        ["description"],
    ),
    (
        "param changed",
        {"params": {"lr": 0.2}},
        [({"params": {"lr": 0.1}}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.REPLACE,
        ["params.lr"],
    ),
    (
        "max_epochs up, checkpoint",
        {"trainer": {"max_epochs": 20}},
        [({"trainer": {"max_epochs": 10}}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.RESUME,
        ["trainer.max_epochs"],
    ),
    (
        "max_epochs up, no checkpoint",
        {"trainer": {"max_epochs": 20}},
        [({"trainer": {"max_epochs": 10}}, RunStatus.COMPLETED, 1, False)],
        {},
        ActionKind.REPLACE,
        ["trainer.max_epochs"],
    ),
    (
        "max_epochs down",
        {"trainer": {"max_epochs": 5}},
        [({"trainer": {"max_epochs": 10}}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.REPLACE,
        ["trainer.max_epochs"],
    ),
    (
        "max_epochs up and another change",
        {"trainer": {"max_epochs": 20, "precision": "bf16-mixed"}},
        [({"trainer": {"max_epochs": 10}}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.REPLACE,
        ["trainer.max_epochs", "trainer.precision"],
    ),
    (
        "max_epochs up plus a cosmetic edit still resumes",
        {"trainer": {"max_epochs": 20}, "description": "longer"},
        [({"trainer": {"max_epochs": 10}}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.RESUME,
        ["trainer.max_epochs", "description"],
    ),
    (
        "changed while the old run is running",
        {"params": {"lr": 0.2}},
        [({"params": {"lr": 0.1}}, RunStatus.RUNNING, 1, False)],
        {},
        ActionKind.WAIT,
        ["params.lr"],
    ),
    (
        "changed after the old run failed",
        {"params": {"lr": 0.2}},
        [({"params": {"lr": 0.1}}, RunStatus.FAILED, 1, False)],
        {},
        ActionKind.REPLACE,
        ["params.lr"],
    ),
    (
        "container changed",
        {"container": "Other"},
        [({}, RunStatus.COMPLETED, 1, True)],
        {},
        ActionKind.REPLACE,
        ["container", "tracking.experiment"],
    ),
]


def _history(history: History) -> list[RunRecord]:
    return [
        record(run_of("exp", **fields), status, attempt=attempt, has_checkpoint=checkpoint)
        for fields, status, attempt, checkpoint in history
    ]


@pytest.mark.parametrize(
    ("desired", "history", "options", "kind", "paths"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_one_run(
    desired: dict[str, Any], history: History, options: dict[str, Any], kind: str, paths: list[str]
) -> None:
    run = run_of("exp", **desired)
    action = only(plan([run], _history(history), **options))
    assert action.kind == kind, action.reason
    assert [c.path for c in action.changes] == paths
    assert action.run is not None and action.run.spec_hash == run.spec_hash
    assert action.reason


def test_create_names_the_run_and_its_first_attempt() -> None:
    action = only(plan([BASE], []))
    assert (action.kind, action.run_name, action.attempt) == (ActionKind.CREATE, BASE.run_name, 1)
    assert action.run == BASE and action.previous is None and action.observed_status is None


def test_update_lists_old_and_new_values() -> None:
    old = run_of("exp", description="old", tags={"team": "a"})
    new = run_of("exp", description="new", tags={"team": "b"})
    assert old.run_name == new.run_name  # cosmetic fields are not identity
    action = only(plan([new], [record(old)]))
    assert action.changes == (
        FieldChange("description", "old", "new"),
        FieldChange("tags.team", "a", "b"),
    )


def test_replace_points_at_the_old_run_and_lists_the_change() -> None:
    old = run_of("exp", params={"lr": 0.1})
    new = run_of("exp", params={"lr": 0.2})
    action = only(plan([new], [record(old)]))
    assert action.kind == ActionKind.REPLACE and action.previous == old.run_name
    assert action.run_name == new.run_name != old.run_name
    assert action.changes == (FieldChange("params.lr", 0.1, 0.2),)
    assert action.run is not None and action.run.resume_from is None


def test_resume_continues_from_the_old_run() -> None:
    old = run_of("exp", trainer={"max_epochs": 10})
    new = run_of("exp", trainer={"max_epochs": 30})
    action = only(plan([new], [record(old, has_checkpoint=True)]))
    assert action.kind == ActionKind.RESUME and action.previous == old.run_name
    assert action.run == dataclasses.replace(new, resume_from=old.run_name)
    assert action.changes == (FieldChange("trainer.max_epochs", 10, 30),)
    assert "10 → 30" in action.reason


def test_resume_waits_for_a_running_previous_run() -> None:
    old = run_of("exp", trainer={"max_epochs": 10})
    new = run_of("exp", trainer={"max_epochs": 30})
    action = only(plan([new], [record(old, RunStatus.RUNNING, has_checkpoint=True)]))
    assert action.kind == ActionKind.WAIT and action.previous == old.run_name
    assert "before resuming" in action.reason


def test_retry_makes_the_next_attempt_and_keeps_resume_from() -> None:
    history = [
        record(BASE, RunStatus.CANCELLED, attempt=1),
        record(BASE, RunStatus.CANCELLED, attempt=2),
    ]
    history[1] = dataclasses.replace(history[1], resume_from="exp-s0-older")
    action = only(plan([BASE], history))
    assert (action.kind, action.attempt) == (ActionKind.RETRY, 3)
    assert action.run is not None and action.run.resume_from == "exp-s0-older"
    assert "cancelled" in action.reason


def test_failed_and_not_retried_says_how_to_retry() -> None:
    action = only(plan([BASE], [record(BASE, RunStatus.FAILED)]))
    assert action.kind == ActionKind.KEEP and action.observed_status == RunStatus.FAILED
    assert "--retry-failed" in action.reason and "retry.on_failure" in action.reason
    exhausted = only(plan([BASE], [record(BASE, RunStatus.FAILED, attempt=3)]))
    assert exhausted.kind == ActionKind.KEEP and "max_attempts" in exhausted.reason
    forced = only(plan([BASE], [record(BASE, RunStatus.FAILED, attempt=3)], retry_failed=True))
    assert (forced.kind, forced.attempt) == (ActionKind.RETRY, 4)
    assert plan([BASE], [record(BASE, RunStatus.FAILED)]).experiments[0].health == Health.FAILED


def test_superseded_and_archived_records_are_history() -> None:
    old = run_of("exp", params={"lr": 0.1})
    archived = record(BASE, state=Lifecycle.ARCHIVED)
    action = only(plan([BASE], [archived, record(old, state=Lifecycle.SUPERSEDED)]))
    assert (action.kind, action.attempt) == (
        ActionKind.CREATE,
        2,
    )  # the next attempt number is free
    assert "archived or superseded" in action.reason


def test_reverting_to_a_superseded_run_replaces_the_live_one() -> None:
    first = run_of("exp", params={"lr": 0.1})
    second = run_of("exp", params={"lr": 0.2})
    history = [record(first, state=Lifecycle.SUPERSEDED), record(second)]
    action = only(plan([first], history))
    assert (action.kind, action.previous, action.attempt) == (
        ActionKind.REPLACE,
        second.run_name,
        2,
    )


def test_the_newest_live_run_of_a_seed_is_compared() -> None:
    a = run_of("exp", params={"lr": 0.1})
    b = run_of("exp", params={"lr": 0.2})
    new = run_of("exp", params={"lr": 0.3})
    history = [record(a, start_time=100.0), record(b, start_time=200.0)]
    action = only(plan([new], history))
    assert action.previous == b.run_name
    assert action.changes == (FieldChange("params.lr", 0.2, 0.3),)


def test_an_interrupted_replace_is_finished() -> None:
    old = run_of("exp", params={"lr": 0.1})
    new = run_of("exp", params={"lr": 0.2})
    # apply submitted the new run, then stopped before marking the old one superseded
    action = only(plan([new], [record(old), record(new)]))
    assert (action.kind, action.previous, action.attempt) == (ActionKind.REPLACE, old.run_name, 1)
    assert "half way" in action.reason


def test_an_interrupted_resume_is_finished_as_a_resume() -> None:
    old = run_of("exp", trainer={"max_epochs": 10})
    new = run_of("exp", trainer={"max_epochs": 20})
    history = [record(old), record(new, resume_from=old.run_name)]
    action = only(plan([new], history))
    assert (action.kind, action.previous) == (ActionKind.RESUME, old.run_name)
    assert action.run is not None and action.run.resume_from == old.run_name


def test_conda_file_content_is_part_of_a_cluster_runs_identity(tmp_path: Path) -> None:
    cluster = {"target": "gpu-cluster"}
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.11]\n")
    old = runs(experiment("exp", root=tmp_path, seeds=[0], compute=cluster))[0]
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.12]\n")
    new = runs(experiment("exp", root=tmp_path, seeds=[0], compute=cluster))[0]
    action = only(plan([new], [record(old)]))
    assert action.kind == ActionKind.REPLACE
    assert [c.path for c in action.changes] == ["environment.conda_sha256"]
    assert action.changes[0].old == old.conda_sha256 and action.changes[0].new == new.conda_sha256


def test_conda_file_content_is_no_part_of_a_local_runs_identity(tmp_path: Path) -> None:
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.11]\n")
    old = runs(experiment("exp", root=tmp_path, seeds=[0]))[0]
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.12]\n")
    new = runs(experiment("exp", root=tmp_path, seeds=[0]))[0]
    assert new.run_name == old.run_name and new.conda_sha256 is None
    assert only(plan([new], [record(old)])).kind == ActionKind.KEEP


def test_a_record_without_a_conda_digest_falls_back_to_the_hash() -> None:
    # a store that recorded no conda digest and no visible difference: the hash is the change
    other = dataclasses.replace(record(BASE), spec_hash="v0:older", run_name="exp-s0-older")
    other = dataclasses.replace(other, provenance={})
    action = only(plan([BASE], [other]))
    assert action.kind == ActionKind.REPLACE
    assert action.changes == (FieldChange("spec_hash", "v0:older", BASE.spec_hash),)


# --- several runs -----------------------------------------------------------------------------


def test_adding_a_seed_creates_exactly_that_seed() -> None:
    before = runs(experiment("exp", seeds=[0, 1, 2]))
    after = runs(experiment("exp", seeds=[0, 1, 2, 3]))
    result = plan(after, [record(r) for r in before])
    assert [(a.kind, a.seed) for a in result.actions] == [
        (ActionKind.KEEP, 0),
        (ActionKind.KEEP, 1),
        (ActionKind.KEEP, 2),
        (ActionKind.CREATE, 3),
    ]


def test_orphans_say_whether_the_seed_or_the_experiment_is_gone() -> None:
    before = runs(experiment("exp", seeds=[0, 1]), experiment("gone"))
    after = runs(experiment("exp", seeds=[0]))
    result = plan(after, [record(r) for r in before])
    orphans = {a.run_name: a for a in result.actions if a.kind == ActionKind.ORPHAN}
    assert set(orphans) == {before[1].run_name, before[2].run_name}
    assert "seed 1 is no longer in the seeds of exp" in orphans[before[1].run_name].reason
    assert "experiment gone is no longer in the manifests" in orphans[before[2].run_name].reason
    assert all(a.run is None for a in orphans.values())
    statuses = {s.experiment: s for s in result.experiments}
    assert not statuses["exp"].in_sync and not statuses["gone"].in_sync


def test_one_orphan_per_run_name() -> None:
    gone = runs(experiment("gone", seeds=[0]))[0]
    history = [
        record(gone, RunStatus.FAILED, attempt=1),
        record(gone, RunStatus.COMPLETED, attempt=2),
    ]
    result = plan([], history)
    assert kinds_of(result) == [(ActionKind.ORPHAN, gone.run_name)]
    assert result.actions[0].attempt == 2


def kinds_of(result: Plan) -> list[tuple[str, str]]:
    return [(a.kind, a.run_name) for a in result.actions]


def _pipeline() -> tuple[list[RunSpec], RunSpec, RunSpec]:
    upstream = experiment("zeta-pretrain", seeds=[0, 1])
    dependent = experiment(
        "alpha-finetune", seeds=[0], checkpoint={"source": {"experiment": "zeta-pretrain"}}
    )
    desired = runs(upstream, dependent)
    pre = next(r for r in desired if r.experiment == "zeta-pretrain" and r.seed == 0)
    fine = next(r for r in desired if r.experiment == "alpha-finetune")
    return desired, pre, fine


def test_a_dependent_run_comes_after_its_upstream_and_depends_on_it() -> None:
    desired, pre, fine = _pipeline()
    result = plan(desired, [])
    order = [a.run_name for a in result.actions]
    assert order.index(pre.run_name) < order.index(fine.run_name)
    dependent = next(a for a in result.actions if a.run_name == fine.run_name)
    assert dependent.depends_on == (pre.run_name,)
    assert fine.spec["checkpoint"]["source"]["run"] == pre.run_name


def test_no_dependency_on_an_upstream_that_is_done() -> None:
    desired, _, fine = _pipeline()
    history = [record(r) for r in desired if r.experiment == "zeta-pretrain"]
    result = plan(desired, history)
    dependent = next(a for a in result.actions if a.run_name == fine.run_name)
    assert dependent.kind == ActionKind.CREATE and dependent.depends_on == ()
    # without dependencies, the order is by experiment name: alpha before zeta
    assert result.actions[0].experiment == "alpha-finetune"


def test_an_upstream_change_replaces_the_dependent_too() -> None:
    desired, _, _ = _pipeline()
    history = [record(r) for r in desired]
    changed = runs(
        experiment("zeta-pretrain", seeds=[0, 1], params={"lr": 0.5}),
        experiment(
            "alpha-finetune", seeds=[0], checkpoint={"source": {"experiment": "zeta-pretrain"}}
        ),
    )
    result = plan(changed, history)
    dependent = next(a for a in result.actions if a.experiment == "alpha-finetune")
    assert dependent.kind == ActionKind.REPLACE
    assert [c.path for c in dependent.changes] == ["checkpoint.source.run"]
    assert dependent.depends_on and dependent.depends_on[0].startswith("zeta-pretrain-s0-")
    order = [a.run_name for a in result.actions]
    assert order.index(dependent.depends_on[0]) < order.index(dependent.run_name)


def test_targets_limit_the_plan_and_pull_in_upstreams() -> None:
    desired, _, _ = _pipeline()
    other = runs(experiment("other"))[0]
    gone = runs(experiment("gone"))[0]
    history = [record(gone)]
    result = plan([*desired, other], history, targets=["alpha-finetune"])
    assert {a.experiment for a in result.actions} == {"alpha-finetune", "zeta-pretrain"}
    assert plan([*desired, other], history, targets=["other"]).actions[0].run_name == (
        other.run_name
    )
    assert kinds_of(plan([other], history, targets=["other"])) == [
        (ActionKind.CREATE, other.run_name)
    ]
    assert kinds_of(plan([other], history, targets=["gone"])) == [
        (ActionKind.ORPHAN, gone.run_name)
    ]


def test_experiment_status_has_two_axes() -> None:
    a, b, c, d = (run_of(n) for n in ("a", "b", "c", "d"))
    changed_b = run_of("b", description="x")
    result = plan(
        [a, changed_b, c, d],
        [record(a), record(b), record(c, RunStatus.RUNNING), record(d, RunStatus.CANCELLED)],
    )
    statuses = {s.experiment: (s.in_sync, s.health) for s in result.experiments}
    assert statuses == {
        "a": (True, Health.HEALTHY),
        "b": (False, Health.HEALTHY),
        "c": (True, Health.RUNNING),
        "d": (False, Health.FAILED),
    }
    assert plan([a], []).experiments[0].health == Health.NONE
    assert result.experiments[0].manifest_path == "experiments/a.yaml"


# --- fingerprint, purity, scale ---------------------------------------------------------------


def test_fingerprint_ignores_order_and_sees_every_input_that_matters() -> None:
    desired = runs(experiment("a", seeds=[0, 1, 2]), experiment("b"))
    observed = [record(r) for r in desired]
    base = fingerprint(desired, observed)
    assert base == fingerprint(desired[::-1], observed[::-1])
    assert base != fingerprint(desired, [dataclasses.replace(observed[0], status=RunStatus.FAILED)])
    assert base != fingerprint(
        desired, [*observed[:-1], dataclasses.replace(observed[-1], attempt=2)]
    )
    assert base != fingerprint(desired, observed, retry_failed=True)
    assert base != fingerprint(desired, observed, targets=["a"])
    cosmetic = runs(experiment("a", seeds=[0, 1, 2], description="x"), experiment("b"))
    assert base != fingerprint(cosmetic, observed)


def test_the_planner_is_deterministic_and_leaves_its_inputs_alone() -> None:
    desired = runs(experiment("a", seeds=[0, 1, 2]), experiment("b", seeds=[3, 4]))
    observed = [
        record(r, random.Random(i).choice([RunStatus.COMPLETED, RunStatus.FAILED]))
        for i, r in enumerate(desired)
    ]
    snapshot = [dataclasses.replace(r, spec_source=dict(r.spec)) for r in observed]
    first = plan(desired, observed)
    assert first == plan(desired[::-1], observed[::-1])
    assert observed == snapshot


def test_flatten_and_diff() -> None:
    assert flatten({"a": {"b": 1, "c": {}}, "d": [1, 2]}) == {"a.b": 1, "a.c": {}, "d": [1, 2]}
    assert diff({"a": [1, 2]}, {"a": [1, 3]}) == (FieldChange("a", [1, 2], [1, 3]),)
    assert diff({"a": 1}, {"a": 1.0}) == (FieldChange("a", 1, 1.0),)  # as the hash sees it
    assert diff({"a": 1}, {}) == (FieldChange("a", 1, None),)


def test_thousands_of_runs_plan_fast() -> None:
    import time

    experiments = [experiment(f"e{i:04d}", seeds=[0, 1, 2]) for i in range(300)]
    desired = runs(*experiments)
    observed = [record(r) for r in desired] * 3
    observed += [dataclasses.replace(o, attempt=2) for o in observed[:1000]]
    start = time.perf_counter()
    result = plan(desired, observed)
    assert time.perf_counter() - start < 1.0
    assert len(result.actions) == 900
