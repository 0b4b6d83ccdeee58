"""`himl runs` on a real MLflow store: queue time and run time apart, typed JSON, and the pointer
to `himl ui` with the filter of the live runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.operations.runs import LIVE_RUNS_FILTER
from himl_manifest.spec import RunSpec

T0 = 1_800_000_000.0  # seconds since the epoch: when the records were created (queued)


def _record(client: Any, experiment: str, name: str, started: float | None) -> None:
    """A managed run queued at T0 that ended 120 s later; its process started at ``started``
    (None: a record of a version that did not record it)."""
    spec = RunSpec(
        experiment="hello",
        seed=0,
        spec={"name": "hello", "container": "HelloWorld", "seed": 0},
        spec_hash="v1:" + "0" * 64,
        run_name=name,
        manifest_path="experiments/hello.yaml",
    )
    tags = {
        "himl.managed": "true",
        "himl.run_name": name,
        "himl.experiment": "hello",
        "himl.seed": "0",
        "himl.spec_hash": spec.spec_hash,
        "himl.attempt": "1",
        "himl.state": "active",
        "himl.spec": json.dumps(json.loads(spec.to_json()), separators=(",", ":")),
        "himl.provenance.dirty": "false",
    }
    if started is not None:
        tags["himl.started_at"] = f"{started:.3f}"
    run = client.create_run(experiment, start_time=int(T0 * 1000), tags=tags)
    client.set_terminated(run.info.run_id, "FINISHED", end_time=int((T0 + 120) * 1000))


@pytest.fixture
def store(tmp_path: Path, empty_store: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    from mlflow.tracking import MlflowClient

    (tmp_path / ".git").mkdir()
    db = tmp_path / "mlflow.db"
    shutil.copy(empty_store, db)
    uri = f"sqlite:///{db}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("hello", tags={"himl.managed": "true"})
    _record(client, experiment, "hello-s0-aaaa1111", started=T0 + 30)
    _record(client, experiment, "hello-s0-bbbb2222", started=None)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return uri


def _runs(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = run_cli(cli, ["runs", "--backend", "local", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_queue_time_and_run_time_apart(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = {r["run_name"]: r for r in json.loads(_runs(capsys, "--format", "json"))["runs"]}
    timed = rows["hello-s0-aaaa1111"]
    assert (timed["queued_s"], timed["run_s"], timed["duration_s"]) == (30.0, 90.0, 120.0)
    assert isinstance(timed["start_time"], float) and isinstance(timed["seed"], int)
    old = rows["hello-s0-bbbb2222"]
    assert (old["queued_s"], old["run_s"], old["duration_s"]) == (None, None, 120.0)

    text = _runs(capsys)
    header, *lines = text.splitlines()
    assert "STARTED" in header and "QUEUED" in header and "TOOK" in header
    columns = {line.split()[0]: line.split() for line in lines if line.startswith("hello-")}
    assert columns["hello-s0-aaaa1111"][7:9] == ["30.0s", "1m30s"]
    assert columns["hello-s0-bbbb2222"][7:9] == ["?", "2m00s"]  # unknown queue: the total


def test_runs_points_at_the_ui(store: str, capsys: pytest.CaptureFixture[str]) -> None:
    last = _runs(capsys).splitlines()[-1]
    assert last == f"Browse them in the MLflow UI: himl ui (live runs: {LIVE_RUNS_FILTER})"
    assert "himl ui" not in _runs(capsys, "--format", "json")
