"""The local backend against a real MLflow SQLite store and real worker processes."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from backend_helpers import MakeRuns, run_all

from himl_manifest.backends.base import Progress, SubmitOutcome
from himl_manifest.backends.local import LocalBackend
from himl_manifest.backends.local_lock import LivenessLock
from himl_manifest.backends.local_records import run_tags
from himl_manifest.errors import CheckpointError, StoreError
from himl_manifest.model import Lifecycle, RunStatus
from himl_manifest.records import TAG_PID


def mlflow_runs(backend: LocalBackend) -> list[dict[str, str]]:
    """Every MLflow run of the store, as tag dicts (independent of the backend's reading)."""
    return [dict(run.data.tags) for run in backend.store.search()]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_empty_store_lists_nothing(backend: LocalBackend) -> None:
    assert backend.list_runs() == []


def test_submit_creates_tagged_records_and_runs_them(
    backend: LocalBackend, make_runs: MakeRuns, project: Path
) -> None:
    runs = make_runs(
        seeds=[0, 1], description="two seeds", tags={"team": "x"}, params={"behaviour": "mlflow"}
    )
    events: list[Progress] = []
    records = run_all(backend, runs, progress=events.append)

    assert {r.run_name for r in records} == {r.run_name for r in runs}
    assert all(r.status == RunStatus.COMPLETED and r.attempt == 1 for r in records)
    by_name = {r.run_name: r for r in backend.list_runs()}
    for run in runs:
        record = by_name[run.run_name]
        assert record.spec == run.spec
        assert record.spec_hash == run.spec_hash
        assert record.seed == run.seed
        assert record.has_checkpoint
        assert record.metrics == {"val_loss": 0.25}
        assert record.output_dir is not None
        folder = Path(record.output_dir)
        assert folder.parent == project / "outputs"
        assert folder.name.endswith("_" + run.run_name)
        assert json.loads((folder / "run_spec.json").read_text())["run_name"] == run.run_name
        assert "attempt 1" in (folder / "runner.log").read_text()
    tags = next(t for t in mlflow_runs(backend) if t["himl.seed"] == "0")
    assert tags["himl.managed"] == "true"
    assert tags["himl.state"] == "active"
    assert tags["mlflow.runName"] == tags["himl.run_name"]  # the run name carries the seed
    assert tags["mlflow.note.content"] == "two seeds"
    assert tags["himl.tag.team"] == "x"
    assert tags[TAG_PID].isdigit()
    statuses = [(e.run_name, e.status) for e in events]
    for run in runs:
        mine = [s for n, s in statuses if n == run.run_name]
        assert mine == [RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED]


def test_submit_twice_creates_nothing_more(backend: LocalBackend, make_runs: MakeRuns) -> None:
    runs = make_runs()
    (first,) = backend.submit(runs)
    (again,) = backend.submit(runs)
    assert (first.outcome, again.outcome) == (SubmitOutcome.CREATED, SubmitOutcome.EXISTED)
    assert again.record is not None and first.record is not None
    assert again.record.run_id == first.record.run_id
    backend.wait([r.run_name for r in runs])
    assert len(mlflow_runs(backend)) == 1


def test_jobs_run_at_once(backend: LocalBackend, make_runs: MakeRuns) -> None:
    runs = make_runs(seeds=[0, 1], params={"sleep": 1})
    backend.jobs = 2
    events: list[Progress] = []
    run_all(backend, runs, progress=events.append)
    order = [e.status for e in events if e.status in (RunStatus.RUNNING, RunStatus.COMPLETED)]
    assert order[:2] == [RunStatus.RUNNING, RunStatus.RUNNING]


def test_long_spec_is_split_over_tags_and_read_back(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    runs = make_runs(description="x" * 9500)
    backend.submit(runs)
    tags = mlflow_runs(backend)[0]
    assert "himl.spec" not in tags and int(tags["himl.spec.parts"]) == 3  # 5000 a tag
    (record,) = backend.list_runs()
    assert record.spec["description"] == "x" * 9500


def test_a_crash_is_recorded_failed_with_the_log_tail(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    runs = make_runs(params={"behaviour": "crash"})
    events: list[Progress] = []
    (record,) = run_all(backend, runs, progress=events.append)
    assert record.status == RunStatus.FAILED
    assert "RuntimeError: boom in training_step" in record.error_tail
    assert events[-1].status == RunStatus.FAILED and "boom" in events[-1].message


def test_a_failure_marked_by_the_runner_keeps_its_error(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (record,) = run_all(backend, make_runs(params={"behaviour": "fail"}))
    assert record.status == RunStatus.FAILED
    assert record.error_tail == "ValueError: the runner marked it failed"


def test_a_retry_reuses_the_output_folder_and_ends_the_interrupted_attempt(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    experiment = backend.store.experiment_id("HelloWorld", None)
    folder = backend.root / "outputs" / f"20250101T000000.000000Z_{run.run_name}"
    tags = run_tags(run, 1, folder, backend.host, "gone-apply")
    first = backend.store.create_run(experiment, {**tags, TAG_PID: str(dead_pid())})
    (before,) = backend.list_runs()
    assert before.status == RunStatus.CANCELLED
    assert before.error_tail.startswith("interrupted: process")

    records = run_all(backend, [run], attempts={run.run_name: 2})
    assert sorted((r.attempt, r.status) for r in records) == [
        (1, RunStatus.CANCELLED),
        (2, RunStatus.COMPLETED),
    ]
    assert {r.output_dir for r in records} == {str(folder)}
    assert backend.store.get(first).info.status == "KILLED"


def test_queued_records_are_interrupted_only_when_their_apply_is_gone(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    experiment = backend.store.experiment_id("HelloWorld", None)
    tags = run_tags(run, 1, backend.root / "outputs" / "x", backend.host, "live-apply")
    backend.store.create_run(experiment, tags)
    lock = LivenessLock(backend.state_dir / "applies", "live-apply")
    lock.acquire()
    try:
        assert backend.list_runs()[0].status == RunStatus.QUEUED
    finally:
        lock.release()
    (record,) = backend.list_runs()
    assert record.status == RunStatus.CANCELLED
    assert record.error_tail == "interrupted: the apply that queued it is gone"


def test_records_of_other_hosts_are_left_alone(backend: LocalBackend, make_runs: MakeRuns) -> None:
    (run,) = make_runs()
    experiment = backend.store.experiment_id("HelloWorld", None)
    tags = run_tags(run, 1, backend.root / "outputs" / "x", "another-host", "their-apply")
    run_id = backend.store.create_run(experiment, {**tags, TAG_PID: str(dead_pid())})
    backend.store.client.update_run(run_id, status="RUNNING")
    assert backend.list_runs()[0].status == RunStatus.RUNNING


def test_dependents_wait_for_their_upstream_and_are_skipped_when_it_fails(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (upstream,) = make_runs("pretrain", params={"behaviour": "crash"})
    (ok_upstream,) = make_runs("pretrain-ok")
    (child,) = make_runs("finetune", checkpoint={"source": {"run": upstream.run_name}})
    (other,) = make_runs("finetune-ok", checkpoint={"source": {"run": ok_upstream.run_name}})
    events: list[Progress] = []
    backend.jobs = 4
    records = run_all(backend, [upstream, ok_upstream, child, other], progress=events.append)
    status = {r.run_name: r for r in records}
    assert status[upstream.run_name].status == RunStatus.FAILED
    assert status[child.run_name].status == RunStatus.CANCELLED
    assert f"upstream run {upstream.run_name} did not complete" in status[child.run_name].error_tail
    assert status[other.run_name].status == RunStatus.COMPLETED
    names = [(e.run_name, e.status) for e in events]
    assert (child.run_name, RunStatus.RUNNING) not in names
    assert names.index((other.run_name, RunStatus.RUNNING)) > names.index(
        (ok_upstream.run_name, RunStatus.COMPLETED)
    )


def test_update_metadata_changes_cosmetic_fields_in_place(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    (run,) = make_runs(description="old", tags={"a": "1", "b": "2"})
    backend.submit([run])
    (edited,) = make_runs(description="new", tags={"a": "3"}, tracking={"display_name": "nice"})
    assert edited.run_name == run.run_name
    backend.update_metadata(run.run_name, edited)
    (record,) = backend.list_runs()
    assert record.spec["description"] == "new"
    assert record.spec["tags"] == {"a": "3"}
    assert record.spec["tracking"]["display_name"] == "nice"
    tags = mlflow_runs(backend)[0]
    assert tags["mlflow.note.content"] == "new"
    assert tags["mlflow.runName"] == "nice"
    assert tags["himl.tag.a"] == "3" and "himl.tag.b" not in tags


def test_set_state_marks_every_attempt(backend: LocalBackend, make_runs: MakeRuns) -> None:
    (run,) = make_runs()
    backend.submit([run])
    backend.submit([run], attempts={run.run_name: 2})
    backend.set_state(run.run_name, Lifecycle.SUPERSEDED)
    assert {r.state for r in backend.list_runs()} == {Lifecycle.SUPERSEDED}
    backend.set_state(run.run_name, Lifecycle.ARCHIVED)
    assert {r.state for r in backend.list_runs()} == {Lifecycle.ARCHIVED}
    with pytest.raises(StoreError, match="no run named"):
        backend.set_state("nope-s0-00000000", Lifecycle.ARCHIVED)


def test_resolve_checkpoint(backend: LocalBackend, make_runs: MakeRuns) -> None:
    (run,) = make_runs()
    (record,) = run_all(backend, [run])
    assert record.output_dir is not None
    folder = Path(record.output_dir)
    (folder / "checkpoints" / "best.ckpt").write_text("w")
    (folder / "other").mkdir()
    (folder / "other" / "x.ckpt").write_text("w")
    last = str(folder / "checkpoints" / "last.ckpt")
    assert backend.resolve_checkpoint(run.run_name) == last
    assert backend.resolve_checkpoint(record.run_id) == last
    assert backend.resolve_checkpoint(f"{run.run_name}:best.ckpt").endswith("checkpoints/best.ckpt")
    assert backend.resolve_checkpoint(f"{run.run_name}:outputs/other/x.ckpt") == str(
        folder / "other" / "x.ckpt"
    )
    with pytest.raises(CheckpointError, match=r"has no checkpoints/missing\.ckpt"):
        backend.resolve_checkpoint(f"{run.run_name}:missing.ckpt")
    with pytest.raises(CheckpointError, match="no run"):
        backend.resolve_checkpoint("nope-s0-00000000")


def test_a_name_collision_is_a_conflict(backend: LocalBackend, make_runs: MakeRuns) -> None:
    (run,) = make_runs()
    backend.submit([run])
    impostor = replace(run, spec_hash="v1:" + "0" * 64)
    (outcome,) = backend.submit([impostor])
    assert outcome.outcome == SubmitOutcome.CONFLICT
    assert len(mlflow_runs(backend)) == 1
