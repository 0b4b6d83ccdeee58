"""The in-memory backend's own helpers: outcomes, checkpoint files, query counting (the shared
behaviour is held by tests/backends/test_contract.py)."""

from __future__ import annotations

import dataclasses

import pytest
from plan_helpers import run_of

from himl_manifest.backends.base import Backend, Progress, SubmitOutcome
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.errors import CheckpointError
from himl_manifest.model import Lifecycle, RunStatus


def test_it_is_a_backend() -> None:
    backend: Backend = MemoryBackend()
    assert backend.name == "memory"


def test_submit_queues_and_wait_gives_the_outcome() -> None:
    run = dataclasses.replace(run_of("exp", description="d"), provenance={"commit": "abc"})
    events: list[Progress] = []
    backend = MemoryBackend()
    (submitted,) = backend.submit([run])
    assert submitted.outcome == SubmitOutcome.CREATED
    assert submitted.record is not None and submitted.record.status == RunStatus.QUEUED
    (record,) = backend.wait([run.run_name], progress=events.append)
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
    assert backend.submitted == 1


def test_outcomes_per_run_and_by_function() -> None:
    a, b, c = run_of("a"), run_of("b"), run_of("c")
    backend = MemoryBackend(
        outcome=lambda run, attempt: RunStatus.FAILED if attempt == 1 else RunStatus.COMPLETED
    )
    backend.set_outcome(b.run_name, RunStatus.RUNNING)
    backend.set_outcome(c.run_name, RunStatus.COMPLETED, checkpoint=False)
    backend.submit([a, b, c])
    records = {r.run_name: r for r in backend.wait([a.run_name, b.run_name, c.run_name])}
    assert records[a.run_name].status == RunStatus.FAILED and records[a.run_name].error_tail
    assert records[b.run_name].status == RunStatus.RUNNING
    assert not records[b.run_name].has_checkpoint
    assert records[c.run_name].status == RunStatus.COMPLETED
    assert not records[c.run_name].has_checkpoint
    backend.submit([a], attempts={a.run_name: 2})
    latest = max(backend.wait([a.run_name]), key=lambda r: r.attempt)
    assert latest.status == RunStatus.COMPLETED
    backend.finish(b.run_name, RunStatus.CANCELLED)
    assert {r.run_name: r.status for r in backend.records()}[b.run_name] == RunStatus.CANCELLED
    with pytest.raises(ValueError, match="unknown status"):
        backend.set_outcome(a.run_name, "exploded")


def test_checkpoint_files_of_the_memory_store() -> None:
    run, bare = run_of("exp"), run_of("bare")
    backend = MemoryBackend()
    backend.set_outcome(bare.run_name, RunStatus.COMPLETED, checkpoint=False)
    backend.submit([run, bare])
    backend.wait([run.run_name, bare.run_name])
    prefix = f"memory://{run.run_name}/1/checkpoints"
    assert backend.resolve_checkpoint(run.run_name) == f"{prefix}/last.ckpt"
    with pytest.raises(CheckpointError, match=r"no checkpoints/best.ckpt"):
        backend.resolve_checkpoint(f"{run.run_name}:best.ckpt")
    backend.add_file(run.run_name, "best.ckpt")
    assert backend.resolve_checkpoint(f"{run.run_name}:best.ckpt") == f"{prefix}/best.ckpt"
    with pytest.raises(CheckpointError, match="has no"):
        backend.resolve_checkpoint(bare.run_name)


def test_reads_are_counted() -> None:
    backend = MemoryBackend([])
    backend.list_runs()
    backend.get_run("x")
    backend.records()  # a test helper, not a query
    assert backend.queries == 2
