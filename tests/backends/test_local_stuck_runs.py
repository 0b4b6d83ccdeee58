"""Nothing stuck: a run folder that cannot be written is refused before any record exists, a
run that never started spends no attempt, and ``--retry-failed`` always retries."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from backend_helpers import MakeRuns, run_all

from himl_manifest.backends.local import LocalBackend
from himl_manifest.errors import StoreError
from himl_manifest.model import ActionKind, RunStatus
from himl_manifest.plan.planner import plan


def test_an_unwritable_outputs_folder_is_refused_before_any_record(
    backend: LocalBackend, make_runs: MakeRuns, project: Path
) -> None:
    (project / "outputs").write_text("not a folder\n")  # root ignores chmod; a file does not
    runs = make_runs()
    for _ in range(4):  # as often as anyone tries: nothing is created, no attempt spent
        with pytest.raises(StoreError, match=r"cannot write the run folder .*outputs/"):
            backend.submit(runs)
        assert backend.list_runs() == []
    (project / "outputs").unlink()
    (record,) = run_all(backend, runs)
    assert (record.attempt, record.status) == (1, RunStatus.COMPLETED)


def test_a_run_that_never_started_spends_no_attempt(
    backend: LocalBackend, make_runs: MakeRuns, project: Path
) -> None:
    runs = make_runs(retry={"max_attempts": 1})
    (run,) = runs
    attempt = 1
    for _ in range(3):
        (submitted,) = backend.submit(runs, attempts={run.run_name: attempt})
        assert submitted.record is not None and submitted.record.output_dir
        folder = Path(submitted.record.output_dir)
        shutil.rmtree(folder)
        folder.write_text("the run folder became a file\n")  # after the check, before start
        record = max(backend.wait([run.run_name]), key=lambda r: r.attempt)
        assert record.attempt == attempt and record.status == RunStatus.CANCELLED
        assert record.never_started
        assert str(folder) in record.error_tail
        folder.unlink()
        (action,) = plan(runs, backend.list_runs()).actions
        assert action.kind == ActionKind.RETRY, action.reason  # max_attempts=1, none spent
        attempt = action.attempt
    record = max(run_all(backend, runs, attempts={run.run_name: attempt}), key=lambda r: r.attempt)
    assert (record.attempt, record.status) == (4, RunStatus.COMPLETED)


def test_retry_failed_retries_whatever_max_attempts_says(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    runs = make_runs(params={"behaviour": "crash"}, retry={"max_attempts": 1})
    (run,) = runs
    (record,) = run_all(backend, runs)
    assert (record.run_name, record.status) == (run.run_name, RunStatus.FAILED)
    (kept,) = plan(runs, backend.list_runs()).actions
    assert kept.kind == ActionKind.KEEP and "--retry-failed" in kept.reason
    (retried,) = plan(runs, backend.list_runs(), retry_failed=True).actions
    assert (retried.kind, retried.attempt) == (ActionKind.RETRY, 2)
