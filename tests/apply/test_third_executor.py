"""A third executor kind joins with one registry line (tests/backends/thread_backend.py): plan
places runs on it by their ``compute.target``, apply submits to it beside the local kind and
waits for it with ``--wait``, `himl logs` fetches its logs: nothing in ``src/`` names it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import thread_backend
from apply_helpers import commit, write_manifest

from himl_manifest.backends import registry
from himl_manifest.cli.main import cli, run_cli


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch, repo: Path) -> Iterator[thread_backend.ThreadBackend]:
    """The thread executor registered, one store for the whole test (in memory)."""
    backend = thread_backend.ThreadBackend()
    monkeypatch.chdir(repo)
    monkeypatch.setattr(registry, "EXECUTORS", dict(registry.EXECUTORS))
    registry.register(replace(thread_backend.THREADS, open=lambda root, options: backend))
    yield backend


def test_runs_are_placed_submitted_and_followed_on_a_third_executor(
    threads: thread_backend.ThreadBackend, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_manifest(repo, name="here", seeds=[0])
    write_manifest(repo, name="pooled", seeds=[0, 1], compute={"target": "threads-pool"})
    commit(repo, "two executors")
    assert run_cli(cli, ["plan", "--no-color"]) == 0
    assert "Plan: 3 to create." in capsys.readouterr().out
    assert run_cli(cli, ["apply", "--yes", "--wait"]) == 0
    assert "Apply complete: 3 created." in capsys.readouterr().err
    pooled = {r.run_name: r for r in threads.records()}
    assert len(pooled) == 2 and all(r.status == "completed" for r in pooled.values())
    assert run_cli(cli, ["plan", "--detailed-exitcode", "--no-color"]) == 0
    name = sorted(pooled)[0]
    capsys.readouterr()
    assert run_cli(cli, ["logs", name]) == 0
    assert f"training {name} attempt 1 in a thread" in capsys.readouterr().out


def test_its_capabilities_are_consulted(
    threads: thread_backend.ThreadBackend, repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The thread executor runs one node per run: pre-flight refuses two, nothing is sent."""
    write_manifest(repo, name="wide", compute={"target": "threads-pool", "num_nodes": 2})
    commit(repo, "two nodes")
    assert run_cli(cli, ["apply", "--yes"]) == 1
    err = capsys.readouterr().err
    assert "2 nodes, but its executor (threads) runs a run on one node" in err
    assert threads.records() == []
