"""The backend contract: every backend (run store + executor) behaves the same.

Parametrized over every backend: the in-memory one and the local one (a real MLflow SQLite store
and real worker processes). A new backend joins by adding one entry to :data:`BACKENDS` (a
function building a :class:`Harness` for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import thread_backend
from backend_helpers import MakeRuns, fake_command
from plan_helpers import unsettled

from himl_manifest.apply.execute import ApplyResult, execute
from himl_manifest.backends.base import Backend, Progress, SubmitOutcome
from himl_manifest.backends.local import LocalBackend
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.backends.routed import RoutedBackend
from himl_manifest.errors import CheckpointError, StoreError
from himl_manifest.model import TERMINAL, ActionKind, Lifecycle, RunStatus
from himl_manifest.plan.model import Plan
from himl_manifest.plan.planner import plan
from himl_manifest.spec import RunSpec


@dataclass
class Harness:
    backend: Backend
    #: Another handle on the same store (a second apply racing the first).
    second: Callable[[], Backend]
    #: Environment variables the backend's clients need while the test runs.
    environment: dict[str, str] = field(default_factory=dict)


def _memory(project: Path) -> Harness:
    def outcome(run: RunSpec, attempt: int) -> RunStatus:
        behaviour = run.spec.get("params", {}).get("behaviour")
        failing = behaviour == "fail" or (behaviour == "fail_once" and attempt == 1)
        return RunStatus.FAILED if failing else RunStatus.COMPLETED

    backend = MemoryBackend(outcome=outcome)
    return Harness(backend, lambda: backend)


def _local(project: Path) -> Harness:
    def make() -> Backend:
        uri = f"sqlite:///{project / 'mlflow.db'}"
        return LocalBackend(uri, project, jobs=2, job_command=fake_command, poll_s=0.05)

    return Harness(make(), make)


def _routed(project: Path) -> Harness:
    """Two stores behind one routed backend: even seeds in one, odd seeds in the other."""
    first, second = _memory(project).backend, _memory(project).backend
    backend = RoutedBackend(
        {"even": first, "odd": second}, route_of=lambda run: "odd" if run.seed % 2 else "even"
    )
    return Harness(backend, lambda: backend)


def _azureml(project: Path) -> Harness:
    """The Azure ML backend against a loopback workspace (tests/backends/azureml/server.py):
    jobs end after a few polls, failing when ``params.behaviour`` is ``fail``; the server plays the
    runner's records (checkpoint files, error tail) when a job ends, and serves MLflow on the
    workspace's tracking URI (reached through the proxy of its ``client_environment``)."""
    pytest.importorskip("azure.ai.ml")
    import server

    workspace = server.FakeWorkspace(
        project, page_size=1, outcome=server.behaviour_outcome, on_finish=server.runner_tags
    )
    return Harness(
        server.backend_of(workspace, project),
        lambda: server.backend_of(workspace, project),
        workspace.client_environment(),
    )


BACKENDS: dict[str, Callable[[Path], Harness]] = {
    "memory": _memory,
    "local": _local,
    "routed": _routed,
    "azureml": _azureml,
    "threads": lambda project: Harness(*thread_backend.pair()),
}


@pytest.fixture(params=sorted(BACKENDS))
def harness(
    request: pytest.FixtureRequest, project: Path, monkeypatch: pytest.MonkeyPatch
) -> Harness:
    made = BACKENDS[request.param](project)
    for name, value in made.environment.items():
        monkeypatch.setenv(name, value)
    return made


def names(runs: list[RunSpec]) -> list[str]:
    return [run.run_name for run in runs]


def test_an_empty_store_lists_nothing(harness: Harness) -> None:
    assert harness.backend.list_runs() == []


def test_submit_returns_once_accepted_and_wait_runs_them(
    harness: Harness, make_runs: MakeRuns
) -> None:
    backend = harness.backend
    runs = make_runs(seeds=[0, 1], description="two seeds", tags={"team": "x"})
    submitted = backend.submit(runs)
    assert [(s.run_name, s.attempt, s.outcome) for s in submitted] == [
        (run.run_name, 1, SubmitOutcome.CREATED) for run in runs
    ]
    accepted = {r.run_name: r for r in backend.list_runs()}
    assert set(accepted) == set(names(runs))
    assert all(r.status not in TERMINAL for r in accepted.values())

    events: list[Progress] = []
    records = backend.wait(names(runs), progress=events.append)
    assert {r.run_name for r in records} == set(names(runs))
    assert {e.run_name for e in events} == set(names(runs))
    listed = {r.run_name: r for r in backend.list_runs()}
    for run in runs:
        record = listed[run.run_name]
        assert record.status == RunStatus.COMPLETED
        assert (record.experiment, record.seed, record.attempt) == (run.experiment, run.seed, 1)
        assert record.spec_hash == run.spec_hash
        assert record.spec == run.spec
        assert record.state == Lifecycle.ACTIVE
        assert record.manifest_path == run.manifest_path
        assert record.has_checkpoint


def test_a_failed_run_is_failed_with_an_error_tail(harness: Harness, make_runs: MakeRuns) -> None:
    (run,) = make_runs(params={"behaviour": "fail"})
    harness.backend.submit([run])
    (record,) = harness.backend.wait([run.run_name])
    assert record.status == RunStatus.FAILED
    assert record.error_tail


def test_submitting_again_is_idempotent(harness: Harness, make_runs: MakeRuns) -> None:
    backend = harness.backend
    runs = make_runs()
    backend.submit(runs)
    backend.wait(names(runs))
    again = backend.submit(runs)
    assert [s.outcome for s in again] == [SubmitOutcome.EXISTED]
    assert again[0].record is not None and again[0].record.status == RunStatus.COMPLETED
    backend.wait(names(runs))
    assert len(backend.list_runs()) == 1


def test_racing_creation_creates_one_record(harness: Harness, make_runs: MakeRuns) -> None:
    runs = make_runs(seeds=[0, 1])
    first = harness.backend.submit(runs)
    other = harness.second()
    second = other.submit(runs)
    assert {s.outcome for s in first} == {SubmitOutcome.CREATED}
    assert {s.outcome for s in second} == {SubmitOutcome.EXISTED}
    harness.backend.wait(names(runs))
    other.wait(names(runs))
    records = harness.backend.list_runs()
    assert sorted(r.run_name for r in records) == sorted(names(runs))


def test_another_identity_under_the_same_name_is_a_conflict(
    harness: Harness, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    harness.backend.submit([run])
    impostor = RunSpec(**{**run.__dict__, "spec_hash": "v1:" + "0" * 64})
    (outcome,) = harness.backend.submit([impostor])
    assert outcome.outcome == SubmitOutcome.CONFLICT
    assert run.spec_hash in outcome.message
    harness.backend.wait([run.run_name])
    assert [r.spec_hash for r in harness.backend.list_runs()] == [run.spec_hash]


def test_attempts_are_records_of_one_run(harness: Harness, make_runs: MakeRuns) -> None:
    backend = harness.backend
    (run,) = make_runs(params={"behaviour": "fail"})
    backend.submit([run])
    backend.wait([run.run_name])
    (second,) = backend.submit([run], attempts={run.run_name: 2})
    assert (second.attempt, second.outcome) == (2, SubmitOutcome.CREATED)
    records = backend.wait([run.run_name])
    assert sorted(r.attempt for r in records) == [1, 2]
    assert sorted(r.attempt for r in backend.list_runs()) == [1, 2]


def test_metadata_update_in_place(harness: Harness, make_runs: MakeRuns) -> None:
    backend = harness.backend
    (run,) = make_runs(description="before", tags={"a": "1"})
    backend.submit([run])
    backend.wait([run.run_name])
    (edited,) = make_runs(description="after", tracking={"display_name": "Nice"})
    assert edited.run_name == run.run_name  # cosmetic: same identity
    backend.update_metadata(run.run_name, edited)
    (record,) = backend.list_runs()
    assert record.spec["description"] == "after"
    assert "tags" not in record.spec
    assert record.spec["tracking"]["display_name"] == "Nice"
    assert record.spec_hash == run.spec_hash
    with pytest.raises(StoreError):
        backend.update_metadata("no-such-run", edited)


def test_supersede_and_archive_every_attempt(harness: Harness, make_runs: MakeRuns) -> None:
    backend = harness.backend
    (run,) = make_runs(params={"behaviour": "fail"})
    backend.submit([run])
    backend.submit([run], attempts={run.run_name: 2})
    backend.wait([run.run_name])
    backend.set_state(run.run_name, Lifecycle.SUPERSEDED)
    assert {r.state for r in backend.list_runs()} == {Lifecycle.SUPERSEDED}
    backend.set_state(run.run_name, Lifecycle.ARCHIVED)
    assert {r.state for r in backend.list_runs()} == {Lifecycle.ARCHIVED}
    with pytest.raises(StoreError):
        backend.set_state("no-such-run", Lifecycle.ARCHIVED)
    with pytest.raises(ValueError, match="state"):
        backend.set_state(run.run_name, "deleted")


def test_find_run_by_name_and_by_id(harness: Harness, make_runs: MakeRuns) -> None:
    backend = harness.backend
    (run,) = make_runs()
    backend.submit([run])
    backend.wait([run.run_name])
    found = backend.find_run(run.run_name)
    assert found is not None and found.run_name == run.run_name
    by_id = backend.find_run(found.run_id)
    assert by_id is not None and by_id.run_name == run.run_name
    assert backend.find_run("no-such-run") is None


@pytest.mark.parametrize(
    ("suffix", "inside"),
    [
        ("", "checkpoints/last.ckpt"),
        (":last.ckpt", "checkpoints/last.ckpt"),
        (":checkpoints/last.ckpt", "checkpoints/last.ckpt"),
        (":outputs/checkpoints/last.ckpt", "checkpoints/last.ckpt"),
    ],
)
def test_checkpoint_references_resolve_alike(
    harness: Harness, make_runs: MakeRuns, suffix: str, inside: str
) -> None:
    backend = harness.backend
    (run,) = make_runs()
    backend.submit([run])
    backend.wait([run.run_name])
    resolved = backend.resolve_checkpoint(run.run_name + suffix)
    assert resolved.endswith(f"/{inside}")
    (record,) = backend.list_runs()
    assert resolved.startswith(str(record.output_dir))


@pytest.mark.parametrize("reference", ["no-such-run", "RUN:../escape.ckpt", "RUN:/abs.ckpt"])
def test_bad_checkpoint_references_are_refused(
    harness: Harness, make_runs: MakeRuns, reference: str
) -> None:
    (run,) = make_runs()
    harness.backend.submit([run])
    harness.backend.wait([run.run_name])
    with pytest.raises(CheckpointError):
        harness.backend.resolve_checkpoint(reference.replace("RUN", run.run_name))


def test_a_missing_checkpoint_file_is_refused(harness: Harness, make_runs: MakeRuns) -> None:
    (run,) = make_runs()
    harness.backend.submit([run])
    harness.backend.wait([run.run_name])
    with pytest.raises(CheckpointError):
        harness.backend.resolve_checkpoint(f"{run.run_name}:no/such.ckpt")


def test_statuses_and_states_are_typed(harness: Harness, make_runs: MakeRuns) -> None:
    (run,) = make_runs()
    harness.backend.submit([run])
    harness.backend.wait([run.run_name])
    (record,) = harness.backend.list_runs()
    assert type(record.status) is RunStatus
    assert type(record.state) is Lifecycle


def test_a_fresh_store_needs_no_confirmation(harness: Harness, make_runs: MakeRuns) -> None:
    assert harness.backend.check_continuity(confirmed=False) == []
    runs = make_runs()
    harness.backend.submit(runs)
    harness.backend.wait(names(runs))
    assert harness.backend.check_continuity(confirmed=False) == []


def _log_history(backend: Backend, run_id: str, key: str, points: list[tuple[int, float]]) -> None:
    """Record what a runner logs for one run, the way each store takes it."""
    if isinstance(backend, RoutedBackend):
        for inner in backend.backends.values():
            if any(record.run_id == run_id for record in inner.list_runs()):
                _log_history(inner, run_id, key, points)
    elif isinstance(backend, MemoryBackend):
        backend.log_history(run_id, key, points)
    else:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        if isinstance(backend, LocalBackend):
            uri = backend.uri
        else:  # Azure ML: the runner in the job logs to the workspace's MLflow tracking URI
            from himl_manifest.backends.azureml.store import AzureMLBackend

            assert isinstance(backend, AzureMLBackend)
            uri = backend.client.workspaces.get(backend.client.workspace_name).mlflow_tracking_uri
        metrics = [Metric(key, value, 1_700_000_000_000 + step, step) for step, value in points]
        MlflowClient(uri).log_batch(run_id, metrics=metrics)


def test_metric_histories_are_read_in_bulk(harness: Harness, make_runs: MakeRuns) -> None:
    import math

    from himl_manifest.backends import local_metrics

    backend = harness.backend
    runs = make_runs(seeds=[0, 1])
    backend.submit(runs)
    backend.wait(names(runs))
    records = {record.seed: record for record in backend.list_runs()}
    first, second = records[0].run_id, records[1].run_id
    _log_history(backend, first, "val_loss", [(7, 0.5), (3, 0.7), (11, math.nan)])
    _log_history(backend, first, "epoch", [(3, 0.0), (7, 1.0), (11, 2.0)])
    _log_history(backend, second, "val_loss", [(3, 0.9)])
    before = local_metrics.executed
    found = backend.metric_histories([first, second, "no-such-run-id"])
    if isinstance(backend, LocalBackend):
        assert local_metrics.executed - before == 1  # one SQL read for every run
    assert set(found) == {first, second, "no-such-run-id"}
    assert found["no-such-run-id"] == {}
    assert found[second] == {"val_loss": [(3, 0.9)]}
    assert found[first]["epoch"] == [(3, 0.0), (7, 1.0), (11, 2.0)]
    steps = [step for step, _ in found[first]["val_loss"]]
    values = [value for _, value in found[first]["val_loss"]]
    assert steps == [3, 7, 11] and values[:2] == [0.7, 0.5] and math.isnan(values[2])
    assert backend.metric_histories([]) == {}


# --- convergence: the real planner and the real executor over each backend -------------------


def _plan(backend: Backend, runs: list[RunSpec]) -> Plan:
    observed = backend.list_runs(full=False, history_of=set(names(runs)))
    return plan(runs, observed)


def _apply(backend: Backend, runs: list[RunSpec]) -> ApplyResult:
    """`himl apply --prune --wait --yes`, as the CLI carries it out."""
    return execute(_plan(backend, runs), backend, prune=True, wait=True)


def test_apply_then_plan_shows_no_changes(harness: Harness, make_runs: MakeRuns) -> None:
    """A create, a seed added with a cosmetic change, a resume, a seed removed (pruned) and a
    run-affecting change: after each apply, the plan right after changes nothing."""
    backend = harness.backend
    history: list[dict[str, Any]] = [
        {"seeds": [0]},
        {"seeds": [0, 1], "description": "two seeds"},
        {"seeds": [0, 1], "trainer": {"max_epochs": 2}, "description": "two seeds"},
        {"seeds": [1], "trainer": {"max_epochs": 2}},
        {"seeds": [1], "trainer": {"max_epochs": 2}, "params": {"lr": 0.5}},
    ]
    for fields in history:
        runs = make_runs(**fields)
        applied = _apply(backend, runs)
        assert applied.ok, applied.summary_line()
        assert unsettled(_plan(backend, runs), applied) == [], fields


def test_an_apply_that_stopped_half_way_settles_in_one_round(
    harness: Harness, make_runs: MakeRuns
) -> None:
    """An earlier apply submitted a new run and stopped before it marked the old one
    superseded; the new run failed and is retried: the apply that retries it also supersedes
    the old run, so the plan after it is clean (it said "replace" before)."""
    backend = harness.backend
    (old,) = make_runs()
    assert _apply(backend, [old]).ok
    retry = {"on_failure": True, "max_attempts": 3}
    (new,) = make_runs(params={"behaviour": "fail_once"}, retry=retry)
    backend.submit([new])  # the apply that stopped half way
    backend.wait([new.run_name])
    first = _plan(backend, [new])
    assert [(a.kind, a.previous) for a in first.actions] == [(ActionKind.RETRY, old.run_name)]
    applied = execute(first, backend, prune=True, wait=True)
    assert applied.ok and applied.superseded == [old.run_name]
    again = _plan(backend, [new])
    assert [a.kind for a in again.actions] == [ActionKind.KEEP], again.actions[0].reason
