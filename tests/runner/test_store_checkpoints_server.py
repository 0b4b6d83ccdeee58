"""Two machines sharing one MLflow server: the store, not a disk, says a run can resume.

A real ``mlflow server`` process (the fixture of test_log_from_vm) is the team's store. Folder
A and its clone B are two machines' checkouts of one repository. `himl apply` in A trains
(2 epochs); A's run folders are then taken away (B cannot see another machine's disk). With
``max_epochs`` raised to 3, `himl plan` in B resumes (the runner recorded the checkpoint in the
store) rather than replacing, and `himl apply` in B resumes from the checkpoint the runner
logged as an MLflow artifact, downloaded: the new run continues at epoch 2, linked to A's run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from runner_helpers import mlflow_client
from test_log_from_vm import tracking_server  # noqa: F401  (the fixture: a real mlflow server)

pytestmark = pytest.mark.slow

TRAINER = {"limit_train_batches": 2, "limit_val_batches": 1, "accelerator": "cpu"}


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _commit(root: Path, message: str) -> None:
    _git(root, "add", "-A")
    _git(root, "-c", "user.email=a@example.org", "-c", "user.name=A", "commit", "-q", "-m", message)


def _manifest(root: Path, max_epochs: int) -> None:
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": "shared",
        "container": "HelloWorld",
        "seeds": [0],
        "trainer": {**TRAINER, "max_epochs": max_epochs},
    }
    (root / "experiments").mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(document, sort_keys=False)
    (root / "experiments" / "shared.yaml").write_text(text, encoding="utf-8")


def _himl(root: Path, server: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": server}
    for name in ("HIML_TRACEBACK", "MLFLOW_RUN_ID", "HIML_CHECKPOINT_ARTIFACTS"):
        env.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "himl_manifest.cli.main", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def _managed(server: str, run_name: str) -> list[Any]:
    client = mlflow_client(server)
    ids = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(ids, f"tags.`himl.run_name` = '{run_name}'")
    return sorted(found, key=lambda run: int(run.data.tags["himl.attempt"]))


def test_a_clone_resumes_from_the_checkpoint_another_machine_logged(
    tmp_path: Path,
    tracking_server: str,  # noqa: F811
) -> None:
    machine_a, machine_b = tmp_path / "a", tmp_path / "b"
    machine_a.mkdir()
    _git(machine_a, "init", "-q", "-b", "main")
    (machine_a / ".gitignore").write_text("outputs/\n.himl/\n", encoding="utf-8")
    _manifest(machine_a, max_epochs=2)
    _commit(machine_a, "shared: 2 epochs")
    _git(tmp_path, "clone", "-q", str(machine_a), str(machine_b))

    done = _himl(machine_a, tracking_server, "apply", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    [first] = _managed(tracking_server, _only_run_name(machine_a, tracking_server))
    tags = first.data.tags
    assert first.info.status == "FINISHED"
    assert tags["himl.checkpoints"] == "checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt"
    assert tags["himl.checkpoints.artifacts"] == (
        "checkpoints/best_val_loss.ckpt,checkpoints/last.ckpt"
    )
    experiment = mlflow_client(tracking_server).get_experiment(first.info.experiment_id)
    assert experiment.name == "shared"  # the manifest's name, not the container class
    shutil.rmtree(machine_a / "outputs")  # machine B cannot see A's disk

    _manifest(machine_b, max_epochs=3)
    _commit(machine_b, "shared: 3 epochs")
    done = _himl(machine_b, tracking_server, "plan", "--format", "json")
    assert done.returncode in (0, 2), done.stderr[-3000:]
    [action] = json.loads(done.stdout)["actions"]
    assert action["kind"] == "resume", action

    done = _himl(machine_b, tracking_server, "apply", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "1 resumed" in done.stderr
    resumed_name = action["run_name"]
    [resumed] = _managed(tracking_server, resumed_name)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["mlflow.parentRunId"] == first.info.run_id
    assert resumed.data.tags["himl.resume_from"] == first.data.tags["himl.run_name"]
    cached = machine_b / ".himl" / "cache" / "runs" / first.info.run_id / "checkpoints"
    assert (cached / "last.ckpt").is_file()  # downloaded from the server
    client = mlflow_client(tracking_server)
    epochs = client.get_metric_history(resumed.info.run_id, "epoch")
    val = client.get_metric_history(resumed.info.run_id, "val_loss")
    assert [m.step for m in val] and {m.step: m.value for m in epochs}[val[0].step] == 2.0
    log = (Path(resumed.data.tags["himl.output_dir"]) / "runner.log").read_text()
    assert str(cached / "last.ckpt") in log


def _only_run_name(root: Path, server: str) -> str:
    done = _himl(root, server, "runs", "--format", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = json.loads(done.stdout)["runs"]
    return str(run["run_name"])
