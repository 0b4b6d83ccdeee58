"""Fixtures of the runner tests: tmp projects, a real MLflow SQLite store, one trained run.

Every test runs in its own project folder (a ``.git`` folder makes it the project root), with
``MLFLOW_TRACKING_URI`` pointing at a copy of an initialized SQLite store (creating one costs
seconds; copying one costs nothing). One HelloWorld run trained per session (per xdist worker)
provides the checkpoint that inference, resume and checkpoint-source tests start from.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import TrainedRun, mlflow_client, new_store, run_flags, write_package

from himl_manifest.runner import tracking


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialized, empty MLflow SQLite store, made once."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    mlflow_client(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_template: Path
) -> Iterator[Path]:
    """A fresh project folder as the working directory, with its own run store."""
    root = tmp_path / "proj"
    (root / ".git").mkdir(parents=True)
    monkeypatch.chdir(root)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", new_store(root, store_template))
    for name in (tracking.TRACKING_ENV, tracking.RUN_ID_ENV, "HIML_RUN_DIR", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    yield root


@pytest.fixture
def package(project: Path) -> Iterator[Any]:
    """Write a package into the project; its modules are forgotten after the test."""
    names: list[str] = []

    def make(name: str, files: dict[str, str]) -> str:
        names.append(name)
        write_package(project, name, files)
        return name

    yield make
    for module in list(sys.modules):
        if any(module == n or module.startswith(n + ".") for n in names):
            del sys.modules[module]


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, store_template: Path) -> TrainedRun:
    """HelloWorld trained for 2 short epochs, recorded in its own store (once per worker)."""
    root = tmp_path_factory.mktemp("trained")
    (root / ".git").mkdir()
    uri = new_store(root, store_template)
    previous = Path.cwd()
    os.chdir(root)
    try:
        (result,) = run_flags(
            "--model=HelloWorld",
            "--max_epochs=2",
            f"--tracking_uri={uri}",
            "--tag=upstream",
            "--limit_train_batches=6",
            "--num_sanity_val_steps=0",
        )
    finally:
        os.chdir(previous)
    assert result.run_id and result.output_dir
    return TrainedRun(root, uri, result.output_dir, result.run_id, result.metrics)
