"""Fixtures of the report tests: real HelloWorld runs, trained once per session.

Two experiments of three seeds each, trained by the real `himl apply` in a real git repository
with a real MLflow SQLite store: ``hello`` (HelloWorld's learning rate, 0.1) and ``hello-slow``
(learning rate 0.001: it barely learns in three short epochs, so it is clearly worse). Tests
compute every expected number themselves from each run's own ``metrics.csv``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_helpers import Project, commit, init_repo, manifest


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Project:
    """``hello`` and ``hello-slow``, three seeds each, applied and trained for real."""
    root = init_repo(tmp_path_factory.mktemp("report") / "repo")
    (root / "experiments" / "hello.yaml").write_text(manifest("hello"), encoding="utf-8")
    (root / "experiments" / "hello-slow.yaml").write_text(
        manifest("hello-slow", params={"learning_rate": 0.001}), encoding="utf-8"
    )
    commit(root, "two experiments")
    shutil.copy(empty_store, root / "mlflow.db")
    project = Project(root)
    done = project.himl("apply", "--yes", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "6 completed" in done.stderr, done.stderr
    return project
