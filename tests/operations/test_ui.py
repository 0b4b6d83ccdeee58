"""`himl ui`: the real MLflow server started on a real store, asked over HTTP, and stopped; and
what it says when it cannot (mlflow-skinny only, no store, a remote store)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.operations.runs import LIVE_RUNS_FILTER
from himl_manifest.operations.ui import INSTALL_HINT, pages_installed

needs_ui = pytest.mark.skipif(
    not pages_installed(),
    reason=f"needs the full mlflow package (its web pages): {INSTALL_HINT}",
)


def _store_with_runs(root: Path, empty_store: Path) -> Path:
    """A store holding two managed runs of one experiment: one live, one superseded."""
    from mlflow.tracking import MlflowClient

    (root / ".git").mkdir(parents=True)
    db = root / "mlflow.db"
    shutil.copy(empty_store, db)
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.create_experiment("hello", tags={"himl.managed": "true"})
    for name, state in (("hello-s0-aaaa1111", "superseded"), ("hello-s0-bbbb2222", "active")):
        tags = {"himl.managed": "true", "himl.run_name": name, "himl.state": state}
        run = client.create_run(experiment, tags=tags, run_name=name)
        client.set_terminated(run.info.run_id, "FINISHED")
    return db


def _ui(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run_cli(cli, ["ui", *args])
    out, err = capsys.readouterr()
    return code, out + err


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        found: dict[str, Any] = json.loads(answer.read())
        return found


@pytest.mark.slow
@needs_ui
def test_himl_ui_serves_the_store_and_stops_cleanly(tmp_path: Path, empty_store: Path) -> None:
    root = tmp_path / "project"
    _store_with_runs(root, empty_store)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    process = subprocess.Popen(
        [sys.executable, "-m", "himl_manifest.cli.main", "ui"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")))
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any(line.startswith("MLflow UI: ") for line in lines):
            assert process.poll() is None, f"himl ui exited {process.returncode}: {lines}"
            assert time.monotonic() < deadline, f"no URL printed: {lines}"
            time.sleep(0.2)
        url = next(line for line in lines if line.startswith("MLflow UI: ")).split()[2]
        assert url.startswith("http://127.0.0.1:")
        assert any(LIVE_RUNS_FILTER in line for line in lines)
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200 and b"<html" in page.read().lower()
        experiments = _post(f"{url}/api/2.0/mlflow/experiments/search", {"max_results": 10})
        ids = [e["experiment_id"] for e in experiments["experiments"] if e["name"] == "hello"]
        found = _post(
            f"{url}/api/2.0/mlflow/runs/search",
            {"experiment_ids": ids, "filter": LIVE_RUNS_FILTER},
        )
        names = [run["info"]["run_name"] for run in found["runs"]]
        assert names == ["hello-s0-bbbb2222"]  # the filter hides the superseded run
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
        reader.join(timeout=10)
    assert code == 0
    with pytest.raises(OSError):  # the server went with it
        urllib.request.urlopen(url, timeout=5)


def test_without_the_web_pages_ui_names_the_extra(
    tmp_path: Path,
    empty_store: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if pages_installed():
        # hide the full package's pages: mlflow resolves to an empty stand-in folder
        fake = tmp_path / "site" / "mlflow"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text("")
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
        monkeypatch.delitem(sys.modules, "mlflow", raising=False)
    _store_with_runs(tmp_path / "project", empty_store)
    monkeypatch.chdir(tmp_path / "project")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, output = _ui(capsys)
    assert code == 1, output
    assert "the MLflow UI is not installed" in output
    assert "pip install 'himl-manifest[ui]'" in output


def test_a_missing_store_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, output = _ui(capsys)
    assert code == 1
    assert "no MLflow store there yet (`himl apply` creates it)" in output
    assert not (tmp_path / "mlflow.db").exists()  # nothing created


def test_a_server_store_is_pointed_at(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".git").mkdir()
    monkeypatch.chdir(tmp_path)
    code, output = _ui(capsys, "--tracking-uri", "https://mlflow.example.org")
    assert code == 0, output
    assert "The run store is served already: https://mlflow.example.org" in output
    assert f"Live runs: {LIVE_RUNS_FILTER}" in output
