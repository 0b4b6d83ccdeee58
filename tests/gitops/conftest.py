"""Fixtures of the `himl init` and workflow tests: real git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
from gitops_helpers import git


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A fresh, empty git repository (branch main), with a committer configured."""
    root = tmp_path / "lab"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "researcher@example.org")
    git(root, "config", "user.name", "Researcher")
    return root
