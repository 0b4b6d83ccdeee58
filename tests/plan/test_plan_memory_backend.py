"""The in-memory backend: the whole Backend interface, outcomes, idempotency, query counting."""

from __future__ import annotations

import dataclasses

import pytest
from plan_helpers import run_of

from himl_manifest.backends.base import Backend, Progress
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.errors import CheckpointError, StoreError
from himl_manifest.model import Lifecycle, RunStatus


def test_it_is_a_backend() -> None:
    backend: Backend = MemoryBackend()
    assert backend.name == "memory"


def test_submit_records_the_run_and_its_outcome() -> None:
    run = dataclasses.replace(run_of("exp", description="d"), provenance={"commit": "abc"})
    events: list[Progress] = []
    backend = MemoryBackend()
    (record,) = backend.submit([run], progress=events.append)
    assert (record.run_name, record.attempt, record.status, record.state) == (
        run.run_name,
        1,
        RunStatus.COMPLETED,
        Lifecycle.ACTIVE,
    )
    assert record.spec == run.spec and record.spec_hash == run.spec_hash
    assert record.has_checkpoint and record.provenance["commit"] == "abc"
    assert record.provenance["conda_sha256"] == ""
    assert [e.status for e in events] == [RunStatus.COMPLETED]


def test_submit_is_idempotent_by_name_and_attempt() -> None:
    run = run_of("exp")
    backend = MemoryBackend()
    first = backend.submit([run])
    assert backend.submit([run]) == first
    assert backend.submitted == 1 and len(backend.records()) == 1
    backend.submit([run], attempts={run.run_name: 2})
    assert sorted(r.attempt for r in backend.records()) == [1, 2]
    clash = dataclasses.replace(run, spec_hash="v1:other")
    with pytest.raises(StoreError, match="another spec hash"):
        backend.submit([clash])


def test_outcomes_per_run_and_by_function() -> None:
    a, b, c = run_of("a"), run_of("b"), run_of("c")
    backend = MemoryBackend(
        outcome=lambda run, attempt: RunStatus.FAILED if attempt == 1 else RunStatus.COMPLETED
    )
    backend.set_outcome(b.run_name, RunStatus.RUNNING)
    backend.set_outcome(c.run_name, RunStatus.COMPLETED, checkpoint=False)
    records = {r.run_name: r for r in backend.submit([a, b, c])}
    assert records[a.run_name].status == RunStatus.FAILED and records[a.run_name].error_tail
    assert (
        records[b.run_name].status == RunStatus.RUNNING and not records[b.run_name].has_checkpoint
    )
    assert (
        records[c.run_name].status == RunStatus.COMPLETED and not records[c.run_name].has_checkpoint
    )
    assert backend.submit([a], attempts={a.run_name: 2})[0].status == RunStatus.COMPLETED
    backend.finish(b.run_name, RunStatus.CANCELLED)
    assert {r.run_name: r.status for r in backend.records()}[b.run_name] == RunStatus.CANCELLED
    with pytest.raises(ValueError, match="unknown status"):
        backend.set_outcome(a.run_name, "exploded")


def test_update_metadata_copies_cosmetic_fields_to_every_attempt() -> None:
    old = run_of("exp", description="old", tags={"a": "1"}, tracking={"display_name": "x"})
    new = run_of("exp", tags={"b": "2"})
    backend = MemoryBackend()
    backend.submit([old])
    backend.submit([old], attempts={old.run_name: 2})
    backend.update_metadata(old.run_name, new)
    for record in backend.records():
        assert "description" not in record.spec
        assert record.spec["tags"] == {"b": "2"}
        assert "display_name" not in record.spec["tracking"]
        assert record.spec["trainer"] == old.spec["trainer"]
    with pytest.raises(StoreError):
        backend.update_metadata("nope", new)


def test_set_state_marks_every_attempt() -> None:
    run = run_of("exp")
    backend = MemoryBackend()
    backend.submit([run])
    backend.submit([run], attempts={run.run_name: 2})
    backend.set_state(run.run_name, Lifecycle.SUPERSEDED)
    assert {r.state for r in backend.records()} == {Lifecycle.SUPERSEDED}
    backend.set_state(run.run_name, Lifecycle.ARCHIVED)
    assert {r.state for r in backend.records()} == {Lifecycle.ARCHIVED}
    with pytest.raises(ValueError):
        backend.set_state(run.run_name, "deleted")
    with pytest.raises(StoreError):
        backend.set_state("nope", Lifecycle.ARCHIVED)


def test_resolve_checkpoint() -> None:
    run, bare = run_of("exp"), run_of("bare")
    backend = MemoryBackend()
    backend.set_outcome(bare.run_name, RunStatus.COMPLETED, checkpoint=False)
    backend.submit([run, bare])
    prefix = f"memory://{run.run_name}/1/outputs/checkpoints"
    assert backend.resolve_checkpoint(run.run_name) == f"{prefix}/last.ckpt"
    assert backend.resolve_checkpoint(f"{run.run_name}:best.ckpt") == f"{prefix}/best.ckpt"
    assert backend.resolve_checkpoint(f"{run.run_name}:x/y.ckpt").endswith("/1/x/y.ckpt")
    with pytest.raises(CheckpointError, match="no checkpoint"):
        backend.resolve_checkpoint(bare.run_name)
    with pytest.raises(CheckpointError, match="no run"):
        backend.resolve_checkpoint("missing")


def test_reads_are_counted() -> None:
    backend = MemoryBackend([])
    backend.list_runs()
    backend.get_run("x")
    backend.records()  # a test helper, not a query
    assert backend.queries == 2
