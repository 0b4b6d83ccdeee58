"""Helpers of the apply tests: real git repositories, the real CLI in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

#: Tiny real training: one epoch of two batches (a run takes a few seconds, mostly imports).
TINY_TRAINER = {
    "max_epochs": 1,
    "limit_train_batches": 2,
    "limit_val_batches": 1,
    "accelerator": "cpu",
}
GITIGNORE = "outputs/\nmlflow.db\n.himl/\nmlartifacts/\nplan.json\n"
BOOM_MODULE = '''"""A container whose training step raises: the crash test's fixture."""
from himl_manifest.configs.hello_world import HelloRegression, HelloWorld


class BoomRegression(HelloRegression):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("boom in training_step")


class Boom(HelloWorld):
    def create_model(self):
        return BoomRegression(learning_rate=self.learning_rate)
'''


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def init_repo(repo: Path) -> Path:
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "researcher@example.org")
    git(repo, "config", "user.name", "Researcher")
    git(repo, "remote", "add", "origin", "https://someone:s3cret@example.org/lab/exp.git")
    (repo / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (repo / "experiments").mkdir(exist_ok=True)
    return repo


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def write_manifest(repo: Path, name: str = "hello", **fields: Any) -> Path:
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": name,
        "container": "HelloWorld",
        "seeds": [0],
        "trainer": dict(TINY_TRAINER),
        **fields,
    }
    path = repo / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def env_for(repo: Path) -> dict[str, str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    env.pop("HIML_TRACEBACK", None)
    for actor in (
        "HIML_APPLIED_BY",
        "GITHUB_ACTOR",
        "GITLAB_USER_LOGIN",
        "BUILD_REQUESTEDFOREMAIL",
        "BUILD_REQUESTEDFOR",
    ):
        env.pop(actor, None)  # who applied: git's user.email, inside CI as outside
    return env


def himl_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "himl_manifest.cli.main", *args]


def himl(repo: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in ``repo`` (stdin not a terminal); never raises on exit codes."""
    return subprocess.run(
        himl_command(*args),
        cwd=repo,
        env=env_for(repo),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


def runs_json(repo: Path, *args: str) -> list[dict[str, Any]]:
    done = himl(repo, "runs", "--all", "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    runs: list[dict[str, Any]] = json.loads(done.stdout)["runs"]
    return runs


def mlflow_attempts(repo: Path) -> Counter[tuple[str, str]]:
    """How many MLflow runs exist per (run name, attempt), read straight from the store."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    found = client.search_runs(ids, run_view_type=ViewType.ALL, max_results=1000)
    return Counter(
        (run.data.tags["himl.run_name"], run.data.tags["himl.attempt"])
        for run in found
        if run.data.tags.get("himl.managed") == "true"
    )
