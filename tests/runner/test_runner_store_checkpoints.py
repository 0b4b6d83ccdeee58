"""The runner records its checkpoints in the run store as it writes them, and (where the store
is not a file on this machine, or when asked) logs them as MLflow artifacts another machine can
resume from.

Real training of a tiny HelloWorld (a container of the test adds a callback that reads the store
while the run trains), a real MLflow SQLite store, and MLflow's artifact store beside it.
The same against a real ``mlflow server`` with two project folders: test_store_checkpoints_server.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import FAST, mlflow_client, run_flags

from himl_manifest.backends.local import LocalStore
from himl_manifest.errors import ConfigError
from himl_manifest.runner import checkpoints, tracking

WATCHER = """
import json
import os

from lightning.pytorch.callbacks import Callback
from mlflow.tracking import MlflowClient

from himl_manifest.configs.hello_world import HelloWorld


class StoreWatcher(Callback):
    '''At the start of each epoch after the first: what the store says about the run.'''

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 0:
            return
        [run_id] = [lg.version for lg in trainer.loggers if lg.name == "himl"]
        tags = MlflowClient(os.environ["MLFLOW_TRACKING_URI"]).get_run(run_id).data.tags
        seen = {k: v for k, v in tags.items() if k.startswith("himl.checkpoints")}
        with open(os.environ["WATCH_FILE"], "a") as out:
            out.write(json.dumps([trainer.current_epoch, seen]) + "\\n")


class Watched(HelloWorld):
    def get_callbacks(self):
        return [StoreWatcher()]
"""


@pytest.mark.parametrize(
    ("uri", "setting", "expected"),
    [
        ("sqlite:////proj/mlflow.db", "", False),
        ("file:///proj/mlruns", "", False),
        ("/proj/mlruns", "", False),
        ("http://mlflow.lab:5000", "", True),
        ("https://mlflow.lab", "auto", True),
        ("databricks", "", True),
        ("http://mlflow.lab:5000", "off", False),
        ("sqlite:////shared/team/mlflow.db", "on", True),
    ],
)
def test_which_stores_get_checkpoint_artifacts(
    uri: str, setting: str, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tracking.CHECKPOINT_ARTIFACTS_ENV, setting)
    assert tracking.logs_checkpoint_artifacts(uri) is expected


def test_bad_artifact_settings_are_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(tracking.CHECKPOINT_ARTIFACTS_ENV, "sometimes")
    with pytest.raises(ConfigError, match="HIML_CHECKPOINT_ARTIFACTS='sometimes'"):
        tracking.logs_checkpoint_artifacts("http://mlflow.lab")
    monkeypatch.setenv(tracking.CHECKPOINT_ARTIFACT_EPOCHS_ENV, "-2")
    with pytest.raises(ConfigError, match="HIML_CHECKPOINT_ARTIFACT_EPOCHS='-2'"):
        tracking.artifact_epochs()
    monkeypatch.setenv(tracking.CHECKPOINT_ARTIFACT_EPOCHS_ENV, "")
    assert tracking.artifact_epochs() == tracking.DEFAULT_ARTIFACT_EPOCHS


def _watched(project: Path, package: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    package("watch", {"models.py": WATCHER})
    watch = project / "watch.jsonl"
    monkeypatch.setenv("WATCH_FILE", str(watch))
    return watch


def _seen(watch: Path) -> list[Any]:
    import json

    return [json.loads(line) for line in watch.read_text().splitlines()]


def test_checkpoints_are_recorded_while_the_run_trains_not_only_at_its_end(
    project: Path, package: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = _watched(project, package, monkeypatch)
    [result] = run_flags("--model=watch.Watched", "--max_epochs=2", *FAST)
    # At the start of epoch 1, epoch 0's checkpoints are in the store; a SQLite store on this
    # machine gets no artifacts.
    assert _seen(watch) == [
        [1, {"himl.checkpoints": "checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt"}]
    ]
    tags = mlflow_client(os.environ["MLFLOW_TRACKING_URI"]).get_run(result.run_id).data.tags
    assert "himl.checkpoints.artifacts" not in tags


def test_checkpoint_artifacts_every_n_epochs_then_resolved_where_the_folder_is_gone(
    project: Path, package: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for (``on``) with a SQLite store, as against a server: ``last.ckpt`` every epoch
    (``...EPOCHS=1``) while training, every checkpoint at the end; then, its run folder gone
    (another machine's), the run's checkpoint is downloaded from the artifact store."""
    watch = _watched(project, package, monkeypatch)
    monkeypatch.setenv(tracking.CHECKPOINT_ARTIFACTS_ENV, "on")
    monkeypatch.setenv(tracking.CHECKPOINT_ARTIFACT_EPOCHS_ENV, "1")
    [result] = run_flags("--model=watch.Watched", "--max_epochs=2", *FAST)
    [[epoch, seen]] = _seen(watch)
    assert epoch == 1 and seen["himl.checkpoints.artifacts"] == "checkpoints/last.ckpt"
    uri = os.environ["MLFLOW_TRACKING_URI"]
    tags = mlflow_client(uri).get_run(result.run_id).data.tags
    assert tags["himl.checkpoints.artifacts"] == (
        "checkpoints/best_val_loss.ckpt,checkpoints/last.ckpt"
    )
    expected = (result.output_dir / "checkpoints" / "last.ckpt").read_bytes()
    shutil.rmtree(result.output_dir)

    store = LocalStore(uri, project)
    path = Path(store.resolve_checkpoint(result.run_id))
    assert path == project / ".himl" / "cache" / "runs" / result.run_id / "checkpoints/last.ckpt"
    assert path.read_bytes() == expected
    assert checkpoints.epochs_done(checkpoints.load(path, trusted=True)) == 2
    best = Path(store.resolve_checkpoint(f"{result.run_id}:best_val_loss.ckpt"))
    assert best.is_file() and best.parent == path.parent
