"""Git provenance gathered with GitPython in real repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
from apply_helpers import commit, git, write_manifest

from himl_manifest import __version__
from himl_manifest.errors import ConfigError
from himl_manifest.manifest.schema import schema_version
from himl_manifest.operations.provenance import gather, refuse_dirty, strip_credentials


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://user:token@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://ghp_abc123@github.com/o/r", "https://github.com/o/r"),
        ("http://u:p@host:8080/r", "http://host:8080/r"),
        ("ssh://git:pw@host/r.git", "ssh://host/r.git"),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://github.com/o/r", "https://github.com/o/r"),
    ],
)
def test_strip_credentials(url: str, clean: str) -> None:
    assert strip_credentials(url) == clean


def test_provenance_of_a_committed_manifest(repo: Path) -> None:
    write_manifest(repo, "a")
    first = commit(repo, "a")
    write_manifest(repo, "b")
    head = commit(repo, "b")
    found = gather(repo, ["experiments/a.yaml", "experiments/b.yaml"])
    a = found["experiments/a.yaml"].facts
    assert a["manifest_commit"] == first
    assert a["head_commit"] == head
    assert a["manifest_blob"] == git(repo, "rev-parse", "HEAD:experiments/a.yaml")
    assert a["branch"] == "main"
    assert a["remote_url"] == "https://example.org/lab/exp.git"
    assert a["applied_by"] == "researcher@example.org"
    assert a["dirty"] is False and a["worktree_dirty"] is False
    assert a["tool_version"] == __version__ and a["schema_version"] == schema_version()
    assert found["experiments/b.yaml"].facts["manifest_commit"] == head
    refuse_dirty(found)


def test_uncommitted_and_untracked_manifests_are_dirty(repo: Path) -> None:
    write_manifest(repo, "a")
    commit(repo, "a")
    write_manifest(repo, "a", description="edited")
    write_manifest(repo, "new")
    found = gather(repo, ["experiments/a.yaml", "experiments/new.yaml"])
    assert found["experiments/a.yaml"].dirty and found["experiments/new.yaml"].dirty
    assert found["experiments/a.yaml"].facts["worktree_dirty"] is True
    with pytest.raises(ConfigError) as raised:
        refuse_dirty(found)
    message = str(raised.value)
    assert "experiments/a.yaml: uncommitted changes" in message
    assert "experiments/new.yaml: not committed" in message
    assert "--allow-dirty" in message


def test_outside_git_everything_is_dirty(tmp_path: Path) -> None:
    (tmp_path / "m.yaml").write_text("x")
    found = gather(tmp_path, ["m.yaml"])
    assert found["m.yaml"].dirty
    assert found["m.yaml"].facts["head_commit"] is None
