"""Fixtures of the backend tests: a real MLflow SQLite store per test, a fake runner process.

Creating an MLflow SQLite store costs seconds (schema migrations), so one empty store is made
per worker and copied for each test.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from backend_helpers import MakeRuns, fake_command

from himl_manifest.backends.local import LocalBackend
from himl_manifest.manifest.build import load_experiments
from himl_manifest.spec import RunSpec, expand


@pytest.fixture
def project(tmp_path: Path, empty_store: Path) -> Path:
    """A project folder (``.git/`` marks its root) holding a copy of the empty store."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return tmp_path


@pytest.fixture
def backend(project: Path) -> LocalBackend:
    return LocalBackend(f"sqlite:///{project / 'mlflow.db'}", project, job_command=fake_command)


@pytest.fixture
def make_runs(project: Path) -> MakeRuns:
    """Write a manifest (``name`` plus any top-level fields) and expand it into run specs."""

    def make(name: str = "hello", **fields: Any) -> list[RunSpec]:
        document = {
            "apiVersion": "himl/v1",
            "kind": "Experiment",
            "name": name,
            # Not in the project: the fake runner reads params (`behaviour`) it has no field for.
            "container": "fake.HelloWorld",
            "seeds": [0],
            "trainer": {"max_epochs": 1},
            **fields,
        }
        path = project / "experiments" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        experiments, _ = load_experiments([path])
        return expand(experiments)

    return make
