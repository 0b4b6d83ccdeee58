"""The SQL bulk read of an SQLite store gives exactly the records of the ``search_runs`` path."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from backend_helpers import MakeRuns

from himl_manifest.backends import local_sql
from himl_manifest.backends.local import LocalBackend
from himl_manifest.backends.local_records import run_tags, to_record
from himl_manifest.errors import StoreError
from himl_manifest.model import Lifecycle, RunRecord
from himl_manifest.records import TAG_ERROR, TAG_PID


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def search_path(backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> list[RunRecord]:
    """``list_runs`` through MLflow's ``search_runs`` (the fast read switched off)."""
    with monkeypatch.context() as patch:
        patch.setattr(local_sql, "read_managed_runs", lambda db, full=True, history_of=None: None)
        return backend.list_runs()


def by_id(records: list[RunRecord]) -> list[RunRecord]:
    return sorted(records, key=lambda r: r.run_id)


def populate(backend: LocalBackend, make_runs: MakeRuns, prefix: str = "r") -> list[str]:
    """Runs of every kind, made through MLflow as the backend and `himl run` make them."""
    store = backend.store
    client = store.client
    experiment = store.experiment_id("HelloWorld", backend.artifact_root)
    ids: list[str] = []

    def create(
        run: Any, attempt: int = 1, host: str | None = None, extra: dict[str, str] | None = None
    ) -> str:
        folder = backend.root / "outputs" / f"{run.run_name}-{attempt}"
        tags = run_tags(run, attempt, folder, host or backend.host, "gone-apply")
        run_id = store.create_run(experiment, {**tags, **(extra or {})})
        ids.append(run_id)
        return run_id

    kinds: list[tuple[str, dict[str, Any]]] = [
        ("ok", {"description": "fine", "tags": {"team": "x"}}),
        ("failed", {}),
        ("killed", {}),
        ("long", {"description": "x" * 9500}),
        ("superseded", {}),
        ("archived", {}),
        ("deleted", {}),
        ("queued", {}),
        ("other", {}),
    ]
    ok, failed, killed, long_spec, superseded, archived, deleted, queued, other = (
        make_runs(f"{prefix}-{kind}", **fields)[0] for kind, fields in kinds
    )
    run_id = create(ok)
    client.update_run(run_id, status="RUNNING")
    client.log_metric(run_id, "val_loss", 0.5)
    client.log_metric(run_id, "val_loss", 0.25, step=1)
    client.log_metric(run_id, "train_loss", 1.5)
    folder = backend.root / "outputs" / f"{ok.run_name}-1" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "last.ckpt").write_text("w")
    client.set_terminated(run_id, status="FINISHED")
    run_id = create(failed)
    store.set_tags(run_id, {TAG_ERROR: "ValueError: boom"})
    client.set_terminated(run_id, status="FAILED")
    client.set_terminated(create(killed), status="KILLED")
    client.set_terminated(create(long_spec), status="FINISHED")
    client.set_terminated(create(superseded), status="FINISHED")
    client.set_terminated(create(superseded, attempt=2), status="FINISHED")
    backend.set_state(superseded.run_name, Lifecycle.SUPERSEDED)
    client.set_terminated(create(archived), status="FINISHED")
    backend.set_state(archived.run_name, Lifecycle.ARCHIVED)
    client.delete_run(create(deleted))
    create(queued, extra={TAG_PID: str(dead_pid())})  # interrupted: its process is gone
    client.update_run(create(other, host="another-host"), status="RUNNING")
    # not ours: an unmanaged run, a managed-tagged run without a spec
    client.create_run(experiment, tags={"foo": "bar"})
    client.create_run(experiment, tags={"himl.managed": "true", "himl.run_name": "x"})
    return ids


def test_the_sql_read_equals_the_search_runs_path(
    backend: LocalBackend, make_runs: MakeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = populate(backend, make_runs)
    # a run tagged managed in an experiment that is not: search_runs does not see it
    plain = backend.store.client.create_experiment("plain")
    (stray,) = make_runs("stray")
    tags = run_tags(stray, 1, backend.root / "x", backend.host, "a")
    backend.store.client.create_run(plain, tags=tags)

    before = backend.store.fast_reads
    fast = backend.list_runs()
    assert backend.store.fast_reads == before + 1
    slow = search_path(backend, monkeypatch)
    assert backend.store.fast_reads == before + 1
    assert by_id(fast) == by_id(slow)
    assert fast == slow  # same order too
    assert {r.run_id for r in fast} == set(ids)

    status = {(r.run_name.rsplit("-s", 1)[0], r.attempt): r for r in fast}
    assert status["r-ok", 1].status == "completed"
    assert status["r-ok", 1].metrics == {"val_loss": 0.25, "train_loss": 1.5}
    assert status["r-ok", 1].has_checkpoint
    assert status["r-failed", 1].error_tail == "ValueError: boom"
    assert status["r-killed", 1].status == "cancelled"
    assert status["r-long", 1].spec["description"] == "x" * 9500
    assert {status["r-superseded", a].state for a in (1, 2)} == {Lifecycle.SUPERSEDED}
    assert status["r-archived", 1].state == Lifecycle.ARCHIVED
    assert status["r-deleted", 1].state == "archived"
    assert status["r-queued", 1].status == "cancelled"
    assert status["r-queued", 1].error_tail.startswith("interrupted: process")
    assert status["r-other", 1].status == "running"


def test_a_nan_metric_reads_back_as_nan(backend: LocalBackend, make_runs: MakeRuns) -> None:
    (run,) = make_runs()
    experiment = backend.store.experiment_id("HelloWorld", None)
    run_id = backend.store.create_run(
        experiment, run_tags(run, 1, backend.root / "x", backend.host, "a")
    )
    backend.store.client.log_metric(run_id, "loss", float("nan"))
    (found,) = local_sql.read_managed_runs(Path(backend.store.db or ""))  # type: ignore[misc]
    assert math.isnan(found.data.metrics["loss"])
    (record,) = backend.list_runs()
    assert math.isnan(record.metrics["loss"])


def count_queries(db: Path) -> int:
    before = local_sql.executed
    assert local_sql.read_managed_runs(db) is not None
    return local_sql.executed - before


def test_the_number_of_queries_does_not_grow_with_the_runs(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    db = Path(backend.store.db or "")
    populate(backend, make_runs, "a")
    few = count_queries(db)
    populate(backend, make_runs, "b")
    populate(backend, make_runs, "c")
    assert count_queries(db) == few == local_sql.QUERIES + 1
    assert len(backend.list_runs()) == 3 * 10


def test_list_runs_does_not_import_mlflow(backend: LocalBackend, make_runs: MakeRuns) -> None:
    populate(backend, make_runs)
    code = (
        "import sys; from pathlib import Path; "
        "from himl_manifest.backends.local import LocalBackend; "
        f"b = LocalBackend({backend.uri!r}, Path({str(backend.root)!r})); "
        "print(len(b.list_runs()), 'mlflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["10", "False"]


def test_a_store_of_another_schema_falls_back_to_search_runs(
    backend: LocalBackend, make_runs: MakeRuns, monkeypatch: pytest.MonkeyPatch
) -> None:
    populate(backend, make_runs)
    db = Path(backend.store.db or "")
    copy = db.with_name("other.db")
    connection = sqlite3.connect(db)
    connection.execute(f"VACUUM INTO '{copy}'")
    connection.close()
    connection = sqlite3.connect(copy)
    connection.execute("ALTER TABLE latest_metrics RENAME COLUMN is_nan TO nan_flag")
    connection.commit()
    connection.close()
    assert local_sql.read_managed_runs(copy) is None
    empty = db.with_name("empty.db")
    sqlite3.connect(empty).close()
    assert local_sql.read_managed_runs(empty) is None
    assert local_sql.read_managed_runs(db.with_name("missing.db")) is None


def test_a_store_damaged_after_opening_still_gives_a_store_error(backend: LocalBackend) -> None:
    db = Path(backend.store.db or "")
    fresh = LocalBackend(backend.uri, backend.root)
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 100)
    with pytest.raises(StoreError, match="run store"):
        fresh.list_runs()


def test_a_light_read_skips_what_history_does_not_need(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    """``full=False``: live records exactly as the full read; history (superseded, archived,
    deleted) without spec, metrics, provenance or error tail, but with the checkpoints the
    store records (``himl.checkpoints``, read in the same pass)."""
    populate(backend, make_runs)
    db = Path(backend.store.db or "")
    before = local_sql.executed
    light = local_sql.read_managed_runs(db, full=False)
    assert light is not None
    assert local_sql.executed - before == local_sql.QUERIES + 1
    full = {run.info.run_id: run for run in local_sql.read_managed_runs(db) or []}
    assert [run.info.run_id for run in light] == list(full)  # same runs, same order
    history = 0
    for run in light:
        whole = to_record(full[run.info.run_id])
        record = to_record(run)
        if whole is None:  # not ours (a live run without a spec): dropped either way
            assert record is None and not run.light
            continue
        assert record is not None
        if whole.state == Lifecycle.ACTIVE:
            assert not run.light
            assert record == whole
            continue
        history += 1
        assert run.light and not run.data.metrics
        assert set(run.data.tags) <= set(local_sql.LIGHT_TAGS)
        assert (record.run_name, record.attempt, record.state, record.status) == (
            whole.run_name,
            whole.attempt,
            whole.state,
            whole.status,
        )
        assert (record.experiment, record.seed, record.spec_hash, record.run_id) == (
            whole.experiment,
            whole.seed,
            whole.spec_hash,
            whole.run_id,
        )
        assert record.spec == {} and record.metrics == {} and record.provenance == {}
        assert record.has_checkpoint == whole.has_checkpoint
    assert history == 4  # two superseded attempts, one archived, one deleted


def test_a_plan_reads_history_only_of_the_runs_it_may_submit(
    backend: LocalBackend, make_runs: MakeRuns
) -> None:
    """``history_of``: every active record, and the superseded/archived ones of those names."""
    old, kept = make_runs("old")[0], make_runs("kept")[0]
    backend.submit([old, kept])
    backend.wait([old.run_name, kept.run_name])
    backend.set_state(old.run_name, Lifecycle.SUPERSEDED)
    backend.set_state(kept.run_name, Lifecycle.ARCHIVED)
    assert {r.run_name for r in backend.list_runs(full=False, history_of=set())} == set()
    assert {r.run_name for r in backend.list_runs(full=False, history_of={kept.run_name})} == {
        kept.run_name
    }
    assert len(backend.list_runs(full=False)) == 2
