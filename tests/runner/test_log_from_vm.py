"""`--log_from_vm`: a local run is recorded in the workspace's MLflow tracking server too.

A real ``mlflow server`` process (a free port, a SQLite backend store in the test's folder)
stands in for the workspace's tracking endpoint; ``HIML_LOG_FROM_VM_URI`` hands its URL to the
runner (the override for a workspace whose URI is known; reading the URI from the workspace
itself is tested against the loopback workspace in
tests/backends/azureml/test_runner_cluster.py). The server is then asked, through MlflowClient,
what it holds.

`mlflow server` needs Flask, flask-cors and gunicorn beside mlflow-skinny (the dev extra).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import all_runs, mlflow_client, run_flags

from himl_manifest.errors import ConfigError
from himl_manifest.runner import tracking

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
            return bool(reply.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of an `mlflow server` process of this module's own."""
    pytest.importorskip("flask")
    pytest.importorskip("flask_cors")
    pytest.importorskip("gunicorn")
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'server.db'}",
        "--default-artifact-root",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--gunicorn-opts",
        "--log-level warning",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = (folder / "server.log").open("wb")
    process = subprocess.Popen(
        command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 90
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                log.flush()
                text = (folder / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"mlflow server did not start (exit {process.poll()}):\n{text}")
            time.sleep(0.3)
        yield url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _runs_in(url: str, experiment: str) -> list[Any]:
    client = mlflow_client(url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} on the server"
    return list(client.search_runs([found.experiment_id]))


def test_log_from_vm_records_the_run_on_the_server(
    project: Path, tracking_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tracking.LOG_FROM_VM_URI_ENV, tracking_server)
    [result] = run_flags(
        "--model=HelloWorld",
        "--max_epochs=2",
        "--log_from_vm",
        "--experiment=my_experiment",
        "--tag=my_first_run",
    )
    assert result.ok
    [remote] = _runs_in(tracking_server, "my_experiment")
    assert remote.info.run_name == "my_first_run"
    assert remote.data.tags["mlflow.runName"] == "my_first_run"
    assert remote.info.status == "FINISHED"
    assert remote.data.params["max_epochs"] == "2"
    assert remote.data.params["log_from_vm"] == "true"
    assert remote.data.tags["himl.container"] == "himl_manifest.configs.hello_world.HelloWorld"
    assert remote.data.tags["himl.output_dir"] == str(result.output_dir)
    assert remote.data.tags["himl.checkpoints"].startswith("checkpoints/last.ckpt")
    for name in ("loss", "val_loss", "test_mse", "test_mae"):
        assert name in remote.data.metrics, name
    assert remote.data.metrics["test_mse"] == pytest.approx(result.metrics["test_mse"])
    history = mlflow_client(tracking_server).get_metric_history(remote.info.run_id, "val_loss")
    assert len(history) == 2  # one value per epoch

    # The local run store keeps its own record, with the same metrics.
    [local] = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert local.info.run_id == result.run_id != remote.info.run_id
    assert local.data.metrics["test_mse"] == remote.data.metrics["test_mse"]


def test_log_from_vm_default_experiment_is_the_class_name(
    project: Path, tracking_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(tracking.LOG_FROM_VM_URI_ENV, tracking_server)
    monkeypatch.setenv(tracking.TRACKING_ENV, "off")  # no local record: the workspace's only
    [result] = run_flags("--model=HelloWorld", "--max_epochs=1", "--log_from_vm")
    assert result.ok
    assert all_runs(os.environ["MLFLOW_TRACKING_URI"]) == []  # nothing recorded locally
    runs = _runs_in(tracking_server, "HelloWorld")
    assert [r.info.run_name for r in runs] == ["HelloWorld-s42"]  # <experiment>-s<seed>
    assert result.run_id == runs[0].info.run_id  # the one record is the workspace's
    assert runs[0].info.status == "FINISHED"


def test_log_from_vm_makes_its_own_run_beside_a_precreated_one(
    project: Path, tracking_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """apply's pre-created record (MLFLOW_RUN_ID) is the local run; the workspace gets a new
    run of its own (the id names nothing there)."""
    from himl_manifest.backends.local_store import Store

    store = Store(os.environ["MLFLOW_TRACKING_URI"])
    run_id = store.create_run(store.experiment_id("precreated"), {"mlflow.runName": "apply-run"})
    monkeypatch.setenv(tracking.RUN_ID_ENV, run_id)
    monkeypatch.setenv(tracking.LOG_FROM_VM_URI_ENV, tracking_server)
    [result] = run_flags(
        "--model=HelloWorld", "--max_epochs=1", "--log_from_vm", "--experiment=precreated"
    )
    assert result.run_id == run_id
    [remote] = _runs_in(tracking_server, "precreated")
    assert remote.info.run_id != run_id
    assert remote.info.status == "FINISHED"
    assert "test_mse" in remote.data.metrics


def test_log_from_vm_without_a_workspace_fails_before_the_run(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("azure.ai.ml")
    monkeypatch.delenv(tracking.LOG_FROM_VM_URI_ENV, raising=False)
    for name in ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="no Azure ML workspace found"):
        run_flags("--model=HelloWorld", "--max_epochs=1", "--log_from_vm")
    assert not (project / "outputs").exists()
    assert all_runs(os.environ["MLFLOW_TRACKING_URI"]) == []
