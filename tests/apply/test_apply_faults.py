"""Safety under faults, with real processes: kill -9, two applies at once, a crashing run, a
broken store. Nothing is lost, nothing runs twice."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from apply_helpers import (
    BOOM_MODULE,
    commit,
    env_for,
    himl,
    himl_command,
    mlflow_attempts,
    runs_json,
    write_manifest,
)

pytestmark = pytest.mark.slow


def start_apply(repo: Path, *args: str) -> subprocess.Popen[str]:
    """`himl apply --yes` in its own session (its process group is its pid)."""
    return subprocess.Popen(
        himl_command("apply", "--yes", *args),
        cwd=repo,
        env=env_for(repo),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def test_kill_9_of_apply_loses_nothing_and_runs_nothing_twice(repo: Path) -> None:
    write_manifest(repo, seeds=[0, 1, 2])
    commit(repo, "three seeds")
    apply = start_apply(repo, "--jobs", "2")
    assert apply.stderr is not None
    running = 0
    seen = []
    for line in apply.stderr:  # wait until two runs are in flight (the third is queued)
        seen.append(line)
        running += " running " in line
        if running == 2:
            break
    assert running == 2, "".join(seen)
    os.killpg(apply.pid, signal.SIGKILL)
    apply.wait()

    interrupted = runs_json(repo)
    assert len(interrupted) == 3
    assert {r["status"] for r in interrupted} == {"cancelled"}
    tails = [r["error_tail"] for r in interrupted]
    assert tails.count("interrupted: the apply that queued it is gone") == 1  # never started
    assert sum(t.startswith("interrupted: process ") for t in tails) == 2  # killed in flight

    done = himl(repo, "apply", "--yes", "--jobs", "3")
    assert done.returncode == 0, done.stderr
    assert "Plan: 3 to retry." in done.stderr
    runs = runs_json(repo)
    assert sorted((r["seed"], r["attempt"], r["status"]) for r in runs) == [
        (0, 1, "cancelled"),
        (0, 2, "completed"),
        (1, 1, "cancelled"),
        (1, 2, "completed"),
        (2, 1, "cancelled"),
        (2, 2, "completed"),
    ]
    attempts = mlflow_attempts(repo)
    assert len(attempts) == 6 and set(attempts.values()) == {1}
    for run in runs:  # a retry continues in the folder of the attempt it retries
        assert run["output_dir"] == next(
            r["output_dir"] for r in runs if r["run_name"] == run["run_name"]
        )


def test_two_applies_at_once_create_each_run_once(repo: Path) -> None:
    write_manifest(repo, seeds=[0, 1])
    commit(repo, "two seeds")
    applies = [start_apply(repo, "--jobs", "2") for _ in range(2)]
    outputs = [apply.communicate(timeout=240) for apply in applies]
    for apply, (_, stderr) in zip(applies, outputs, strict=True):
        assert apply.returncode == 0, stderr
    attempts = mlflow_attempts(repo)
    assert len(attempts) == 2 and set(attempts.values()) == {1}
    runs = runs_json(repo)
    assert {r["status"] for r in runs} == {"completed"}
    assert sum(stderr.count(" running ") for _, stderr in outputs) == 2


def test_a_crashing_run_is_failed_with_its_log_tail(repo: Path) -> None:
    package = repo / "configs_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "boom.py").write_text(BOOM_MODULE)
    write_manifest(repo, "boom", container="configs_test.boom.Boom")
    commit(repo, "a container that crashes")
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 1
    assert "Apply finished with failures: 1 created. Runs: 1 failed." in done.stderr
    (run,) = runs_json(repo)
    assert run["status"] == "failed"
    assert "boom in training_step" in run["error_tail"]
    listing = himl(repo, "runs")
    assert listing.returncode == 0, listing.stderr
    assert "failed" in listing.stdout
    assert "| RuntimeError: boom in training_step" in listing.stdout
    assert Path(run["output_dir"], "runner.log").is_file()


def test_a_corrupt_store_is_a_clear_error_and_changes_nothing(repo: Path) -> None:
    write_manifest(repo)
    commit(repo, "one seed")
    store = repo / "mlflow.db"
    store.write_text("this is not a database\n")
    before = sorted(p.name for p in repo.iterdir())
    for command in (["apply", "--yes"], ["plan"], ["runs"]):
        done = himl(repo, *command)
        assert done.returncode == 1
        assert "is not an SQLite database" in done.stderr
        assert "Traceback" not in done.stderr
    missing = himl(repo, "apply", "--yes", "--tracking-uri", "sqlite:////no/such/folder/m.db")
    assert missing.returncode == 1
    assert "folder /no/such/folder does not exist" in missing.stderr
    assert store.read_text() == "this is not a database\n"
    assert sorted(p.name for p in repo.iterdir()) == before
    assert not Path("/no/such/folder").exists()


def test_apply_without_a_terminal_needs_yes(repo: Path) -> None:
    write_manifest(repo)
    commit(repo, "one seed")
    started = time.monotonic()
    done = himl(repo, "apply")
    assert done.returncode == 1
    assert "refusing to apply without confirmation" in done.stderr
    assert "--yes" in done.stderr
    assert mlflow_attempts(repo) == {}
    assert time.monotonic() >= started
