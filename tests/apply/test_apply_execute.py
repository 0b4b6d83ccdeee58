"""The executor over the in-memory backend: which backend call each action makes."""

from __future__ import annotations

from pathlib import Path

import pytest
from apply_helpers import TINY_TRAINER, commit, write_manifest

from himl_manifest.backends.base import Progress
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.errors import ConfigError
from himl_manifest.model import Lifecycle, RunStatus
from himl_manifest.operations.apply import apply as apply_plan
from himl_manifest.operations.plan import make_plan


def apply(repo: Path, backend: MemoryBackend, **options: object) -> str:
    plan = make_plan([repo / "experiments"], backend)
    result = apply_plan(plan, backend, root=repo, **options)  # type: ignore[arg-type]
    return result.summary_line()


def states(backend: MemoryBackend) -> dict[tuple[int, int], str]:
    return {(r.seed, r.attempt): f"{r.status}/{r.state}" for r in backend.records()}


def test_create_then_nothing(repo: Path) -> None:
    write_manifest(repo, seeds=[0, 1])
    head = commit(repo, "two")
    backend = MemoryBackend()
    events: list[Progress] = []
    assert apply(repo, backend, progress=events.append) == (
        "Apply complete: 2 created. Runs: 2 completed."
    )
    assert len(events) == 2
    assert {r.provenance["head_commit"] for r in backend.records()} == {head}
    assert {r.provenance["dirty"] for r in backend.records()} == {"False"}
    assert apply(repo, backend) == "No changes."


def test_replace_supersedes_and_resume_continues(repo: Path) -> None:
    write_manifest(repo, seeds=[0, 1])
    commit(repo, "two")
    backend = MemoryBackend()
    apply(repo, backend)
    write_manifest(repo, seeds=[0, 1], trainer={**TINY_TRAINER, "max_epochs": 5})
    commit(repo, "longer")
    assert apply(repo, backend) == "Apply complete: 2 resumed. Runs: 2 completed."
    records = backend.records()
    assert sorted(r.state for r in records) == [
        Lifecycle.ACTIVE,
        Lifecycle.ACTIVE,
        Lifecycle.SUPERSEDED,
        Lifecycle.SUPERSEDED,
    ]
    resumed = [r for r in records if r.state == Lifecycle.ACTIVE]
    old = {r.run_name for r in records if r.state == Lifecycle.SUPERSEDED}
    assert {r.resume_from for r in resumed} == old
    write_manifest(
        repo, seeds=[0, 1], trainer={**TINY_TRAINER, "max_epochs": 5}, params={"learning_rate": 0.5}
    )
    commit(repo, "another lr")
    assert apply(repo, backend).startswith("Apply complete: 2 replaced.")


def test_update_in_place_and_orphans_with_prune(repo: Path) -> None:
    write_manifest(repo, seeds=[0, 1], description="a")
    commit(repo, "two")
    backend = MemoryBackend()
    apply(repo, backend)
    write_manifest(repo, seeds=[0], description="b")
    commit(repo, "one, new words")
    summary = apply(repo, backend)
    assert summary == "Apply complete: 1 updated. 1 orphaned (archive them with --prune)."
    assert {r.spec["description"] for r in backend.records() if r.seed == 0} == {"b"}
    assert apply(repo, backend, prune=True) == "Apply complete: 1 archived."
    assert states(backend)[(1, 1)] == f"{RunStatus.COMPLETED}/{Lifecycle.ARCHIVED}"


def test_failed_runs_make_a_failed_apply(repo: Path) -> None:
    write_manifest(repo, seeds=[0])
    commit(repo, "one")
    backend = MemoryBackend(outcome=RunStatus.FAILED)
    assert apply(repo, backend) == "Apply finished with failures: 1 created. Runs: 1 failed."


def test_dirty_manifests_are_refused_unless_allowed(repo: Path) -> None:
    write_manifest(repo, seeds=[0])
    commit(repo, "one")
    write_manifest(repo, seeds=[0, 1])
    backend = MemoryBackend()
    with pytest.raises(ConfigError, match="uncommitted changes"):
        apply(repo, backend)
    assert backend.records() == []
    apply(repo, backend, allow_dirty=True)
    assert {r.provenance["dirty"] for r in backend.records()} == {"True"}
    assert {r.provenance["allow_dirty"] for r in backend.records()} == {"True"}
