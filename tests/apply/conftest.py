"""Fixtures of the apply tests: a real git repository per test, with its own run store.

Creating an MLflow SQLite store costs seconds (schema migrations): one empty store is made per
worker and copied into each repository (``mlflow.db`` is git-ignored there).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from apply_helpers import init_repo


@pytest.fixture
def repo(tmp_path: Path, empty_store: Path) -> Path:
    """A git repository (branch main, an origin with credentials in its URL) with experiments/."""
    root = init_repo(tmp_path / "repo")
    shutil.copy(empty_store, root / "mlflow.db")
    return root
