"""`himl init` in a fresh git repository, then the whole loop with the real `himl` executable,
real git, a real MLflow SQLite store (the default one, `mlflow.db` in the repository) and real
training; and the drift check: orphans keep `plan --detailed-exitcode` at 2 until
`apply --prune`, after which the plan is clean."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gitops_helpers import git

pytestmark = pytest.mark.slow

HIML = Path(sys.executable).with_name("himl")


def himl(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HIML_TRACEBACK")
    }
    return subprocess.run(
        [str(HIML), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def initialised(repo: Path, empty_store: Path) -> Path:
    done = himl(repo, "init")
    assert done.returncode == 0, done.stderr
    # the store the tool makes by default, made ahead of time (its migrations take seconds)
    shutil.copy(empty_store, repo / "mlflow.db")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "himl init")
    assert git(repo, "status", "--porcelain") == ""  # mlflow.db is ignored
    return repo


def plan_json(repo: Path, *args: str) -> list[tuple[str, int]]:
    done = himl(repo, "plan", "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    return sorted((a["kind"], a["seed"]) for a in json.loads(done.stdout)["actions"])


def test_init_validate_plan_apply_then_no_changes(git_repo: Path, empty_store: Path) -> None:
    repo = initialised(git_repo, empty_store)
    done = himl(repo, "validate")
    assert (done.returncode, done.stdout) == (0, "1 file valid.\n"), done.stderr
    done = himl(repo, "plan", "--detailed-exitcode")
    assert done.returncode == 2, done.stderr
    assert "Plan: 2 to create." in done.stdout
    done = himl(repo, "apply", "--yes", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "Apply complete: 2 created. Runs: 2 completed." in done.stderr
    done = himl(repo, "plan", "--detailed-exitcode")
    assert (done.returncode, done.stdout.strip()) == (0, "No changes."), done.stderr
    # the runs are in the default store, and their outputs are ignored by git
    assert (repo / "mlflow.db").stat().st_size > 0
    assert git(repo, "status", "--porcelain") == ""


def test_drift_orphans_until_prune(git_repo: Path, empty_store: Path) -> None:
    repo = initialised(git_repo, empty_store)
    done = himl(repo, "apply", "--yes", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    # seed 1 dropped from the manifest: its run is an orphan
    manifest = repo / "experiments/hello-world.yaml"
    manifest.write_text(manifest.read_text().replace("seeds: 2", "seeds: 1"))
    git(repo, "commit", "-q", "-am", "hello-world: one seed")

    done = himl(repo, "plan", "--detailed-exitcode")
    assert done.returncode == 2, done.stderr
    assert done.stdout.count("orphan:") == 1
    assert "Plan: 1 orphaned, 1 unchanged." in done.stdout
    assert "Only orphaned runs differ: `himl apply --prune` archives them" in done.stderr

    # apply without --prune reports the orphan once, keeps it, and the plan stays unclean
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("orphan:") == 1
    assert "Nothing to apply: orphans are archived only with --prune." in done.stderr
    assert himl(repo, "plan", "--detailed-exitcode").returncode == 2

    # a plan of another manifest alone never calls these runs orphans
    other = repo / "experiments/other.yaml"
    other.write_text(manifest.read_text().replace("name: hello-world", "name: other"))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "other")
    assert plan_json(repo, "experiments/other.yaml") == [("create", 0)]
    other.unlink()
    git(repo, "commit", "-q", "-am", "no other")

    # --prune archives it: the plan is clean, and stays clean
    done = himl(repo, "apply", "--yes", "--prune")
    assert done.returncode == 0, done.stderr
    assert "Apply complete: 1 archived." in done.stderr
    done = himl(repo, "plan", "--detailed-exitcode")
    assert (done.returncode, done.stdout.strip()) == (0, "No changes."), done.stderr
    assert plan_json(repo) == [("keep", 0)]
