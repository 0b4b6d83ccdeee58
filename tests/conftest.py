"""Shared by the top-level tests (other test folders have their own conftest)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty repository (a folder with ``.git/``) with ``experiments/``, as the cwd."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path
