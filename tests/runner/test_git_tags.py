"""MLflow's own source tags on runs `himl-runner` makes, and a resumed run's link and steps.

Real training of the tiny HelloWorld in a real git repository (its remote URL holds a token),
recorded in a real MLflow SQLite store: the run carries ``mlflow.source.git.commit``,
``.branch`` and ``.repoURL`` (without the token) and ``mlflow.source.name``; a run resumed from
it (2 epochs, then 3) carries ``mlflow.parentRunId`` and logs its metrics at the steps and
epochs after the first run's, not from 0 again. Its display name follows the one rule of
apply's runs: ``--tag``, else ``<experiment>-s<seed>``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from runner_helpers import FAST, mlflow_client, run_flags

pytestmark = pytest.mark.slow


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _real_repository(root: Path) -> str:
    shutil.rmtree(root / ".git")
    _git(root, "init", "-q", "-b", "trial")
    _git(root, "remote", "add", "origin", "https://bot:s3cret-token@example.org/lab/exp.git")
    _git(root, "-c", "user.email=a@example.org", "-c", "user.name=A", "commit", "-q",
         "--allow-empty", "-m", "start")  # fmt: skip
    return _git(root, "rev-parse", "HEAD")


def _history(run_id: str, key: str) -> list[tuple[int, float]]:
    client = mlflow_client(os.environ["MLFLOW_TRACKING_URI"])
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def test_runs_carry_git_tags_and_a_resumed_run_continues_its_parent(project: Path) -> None:
    commit = _real_repository(project)
    [first] = run_flags("--model=HelloWorld", "--max_epochs=2", *FAST)
    client = mlflow_client(os.environ["MLFLOW_TRACKING_URI"])
    tags = client.get_run(first.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["mlflow.source.git.branch"] == "trial"
    assert tags["mlflow.source.git.repoURL"] == "https://example.org/lab/exp.git"
    assert "s3cret" not in str(tags)
    assert tags["mlflow.source.name"] == "himl-runner --model=HelloWorld"
    assert tags["mlflow.runName"] == "HelloWorld-s42"  # <experiment>-s<seed>, as apply's
    assert tags["himl.checkpoints"] == "checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt"
    assert "mlflow.parentRunId" not in tags

    [resumed] = run_flags(
        "--model=HelloWorld",
        "--max_epochs=3",
        f"--src_checkpoint={first.run_id}",
        "--resume_training=True",
        "--tag=longer",
        *FAST,
    )
    tags = client.get_run(resumed.run_id).data.tags
    assert tags["mlflow.parentRunId"] == first.run_id
    assert tags["mlflow.runName"] == "longer"
    assert tags["mlflow.source.git.commit"] == commit

    # The metric history goes on where the first run stopped: epochs 0, 1, then 2.
    first_steps = [step for step, _ in _history(first.run_id, "val_loss")]
    resumed_steps = [step for step, _ in _history(resumed.run_id, "val_loss")]
    assert len(first_steps) == 2 and len(resumed_steps) == 1
    assert resumed_steps[0] > max(first_steps)
    epochs = {step: value for step, value in _history(first.run_id, "epoch")}
    assert [epochs[step] for step in first_steps] == [0.0, 1.0]
    epochs = {step: value for step, value in _history(resumed.run_id, "epoch")}
    assert [epochs[step] for step in resumed_steps] == [2.0]
