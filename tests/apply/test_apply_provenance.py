"""Git provenance gathered with GitPython in real repositories: complete ones and shallow
clones (``git clone --depth N file://...``, as CI checks out), who applied, and the CI run."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from apply_helpers import (
    commit,
    env_for,
    git,
    himl,
    himl_command,
    init_repo,
    runs_json,
    write_manifest,
)

from himl_manifest import __version__
from himl_manifest.errors import ConfigError
from himl_manifest.manifest.schema import schema_version
from himl_manifest.provenance import (
    APPLIED_BY_VARIABLES,
    SHALLOW_UNKNOWN,
    applied_by,
    ci_run_url,
    gather,
    refuse_dirty,
    strip_credentials,
)

CI_VARIABLES = (
    *APPLIED_BY_VARIABLES,
    "GITHUB_SERVER_URL",
    "GITHUB_REPOSITORY",
    "GITHUB_RUN_ID",
    "GITHUB_RUN_ATTEMPT",
    "CI_JOB_URL",
    "SYSTEM_COLLECTIONURI",
    "SYSTEM_TEAMPROJECT",
    "BUILD_BUILDID",
    "HIML_DEEPEN_TIMEOUT",
)


@pytest.fixture(autouse=True)
def _outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run the same inside a CI job (which sets GITHUB_ACTOR, ...) and outside."""
    for name in CI_VARIABLES:
        monkeypatch.delenv(name, raising=False)


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


# --- shallow clones -----------------------------------------------------------------------------


@pytest.fixture
def upstream(tmp_path: Path) -> dict[str, str]:
    """A repository with history: a.yaml and b.yaml added, then b.yaml changed, then two
    commits that touch neither. Returns its path and those commits."""
    root = init_repo(tmp_path / "upstream")
    write_manifest(root, "a")
    write_manifest(root, "b")
    added = commit(root, "a and b")
    write_manifest(root, "b", description="changed")
    changed_b = commit(root, "b changed")
    (root / "README.md").write_text("one\n")
    commit(root, "readme")
    (root / "README.md").write_text("two\n")
    head = commit(root, "readme again")
    return {"path": str(root), "added": added, "changed_b": changed_b, "head": head}


def _clone(upstream: dict[str, str], where: Path, depth: int) -> Path:
    """A shallow clone, as actions/checkout makes one (file:// so that --depth applies)."""
    git(where.parent, "clone", "-q", f"--depth={depth}", f"file://{upstream['path']}", where.name)
    git(where, "config", "user.email", "ci@example.org")
    assert git(where, "rev-parse", "--is-shallow-repository") == "true"
    return where


PATHS = ["experiments/a.yaml", "experiments/b.yaml"]


def test_a_shallow_clone_records_unknown_never_head(
    upstream: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = _clone(upstream, tmp_path / "ci", depth=1)
    monkeypatch.setenv("HIML_DEEPEN_TIMEOUT", "0")
    warnings: list[str] = []
    found = gather(clone, PATHS, warnings.append)
    for path in PATHS:
        facts = found[path].facts
        assert facts["manifest_commit"] is None  # not HEAD, which git log alone would say
        assert facts["manifest_commit_unknown"] == SHALLOW_UNKNOWN
        assert facts["shallow"] is True
        assert facts["head_commit"] == upstream["head"]
        assert not found[path].dirty
    assert len(warnings) == 1
    assert "experiments/a.yaml, experiments/b.yaml" in warnings[0]
    assert "HIML_DEEPEN_TIMEOUT=0" in warnings[0] and "fetch-depth: 0" in warnings[0]
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"  # nothing fetched


def test_a_change_above_the_boundary_is_provably_right(
    upstream: dict[str, str], tmp_path: Path
) -> None:
    # depth 3: head, readme, "b changed" (the boundary). b changed *in* the boundary commit:
    # its parent is missing, so that is not provable; depth 4 makes it so.
    clone = _clone(upstream, tmp_path / "ci", depth=4)
    warnings: list[str] = []
    found = gather(clone, ["experiments/b.yaml"], warnings.append)
    facts = found["experiments/b.yaml"].facts
    assert facts["manifest_commit"] == upstream["changed_b"]
    assert facts["manifest_commit_unknown"] is None and facts["shallow"] is True
    assert warnings == []  # nothing fetched, nothing to say
    assert git(clone, "rev-parse", "--is-shallow-repository") == "true"


def test_a_change_at_the_boundary_is_not_provable(
    upstream: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = _clone(upstream, tmp_path / "ci", depth=3)
    monkeypatch.setenv("HIML_DEEPEN_TIMEOUT", "0")
    found = gather(clone, ["experiments/b.yaml"])
    assert found["experiments/b.yaml"].facts["manifest_commit"] is None


def test_apply_deepens_a_shallow_clone_to_record_the_real_commit(
    upstream: dict[str, str], tmp_path: Path
) -> None:
    clone = _clone(upstream, tmp_path / "ci", depth=1)
    warnings: list[str] = []
    found = gather(clone, PATHS, warnings.append)
    assert found["experiments/a.yaml"].facts["manifest_commit"] == upstream["added"]
    assert found["experiments/b.yaml"].facts["manifest_commit"] == upstream["changed_b"]
    assert found["experiments/a.yaml"].facts["shallow"] is False
    assert len(warnings) == 1 and "fetched its full history" in warnings[0]
    assert git(clone, "rev-parse", "--is-shallow-repository") == "false"


def test_a_failed_deepening_says_why_and_records_unknown(
    upstream: dict[str, str], tmp_path: Path
) -> None:
    clone = _clone(upstream, tmp_path / "ci", depth=1)
    shutil.rmtree(upstream["path"])  # the remote is gone
    warnings: list[str] = []
    found = gather(clone, PATHS, warnings.append)
    assert found["experiments/a.yaml"].facts["manifest_commit"] is None
    assert len(warnings) == 1
    assert (
        "fetching the full history failed: `git fetch --quiet --unshallow origin`" in (warnings[0])
    )


def test_deepening_is_bounded(
    upstream: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remote that never answers (an ssh command that just sleeps) does not hang apply."""
    clone = _clone(upstream, tmp_path / "ci", depth=1)
    git(clone, "remote", "set-url", "origin", "ssh://nowhere.invalid/lab/exp.git")
    monkeypatch.setenv("GIT_SSH_COMMAND", "sleep 600 #")
    monkeypatch.setenv("HIML_DEEPEN_TIMEOUT", "1")
    warnings: list[str] = []
    found = gather(clone, PATHS, warnings.append)
    assert found["experiments/b.yaml"].facts["manifest_commit"] is None
    assert "did not finish in 1 s" in warnings[0]


def test_a_bad_deepen_timeout_is_a_config_error(
    upstream: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clone = _clone(upstream, tmp_path / "ci", depth=1)
    monkeypatch.setenv("HIML_DEEPEN_TIMEOUT", "soon")
    with pytest.raises(ConfigError, match="HIML_DEEPEN_TIMEOUT='soon': not a number"):
        gather(clone, PATHS)


# --- who applied, from which CI run ---------------------------------------------------------------


class _Config:
    def __init__(self, **values: str) -> None:
        self.values = values

    def get_value(self, section: str, option: str, default: str = "") -> str:
        return self.values.get(option, default)


@pytest.mark.parametrize(
    ("environ", "config", "expected"),
    [
        (
            {"HIML_APPLIED_BY": "release-bot", "GITHUB_ACTOR": "octocat"},
            {"email": "a@b"},
            ("release-bot", "HIML_APPLIED_BY"),
        ),
        ({"GITHUB_ACTOR": "octocat"}, {"email": "a@b"}, ("octocat", "GITHUB_ACTOR")),
        ({"GITLAB_USER_LOGIN": "tanuki"}, {}, ("tanuki", "GITLAB_USER_LOGIN")),
        (
            {"BUILD_REQUESTEDFOREMAIL": "x@corp", "BUILD_REQUESTEDFOR": "X"},
            {},
            ("x@corp", "BUILD_REQUESTEDFOREMAIL"),
        ),
        ({"GITHUB_ACTOR": "  ", "USER": "me"}, {"email": "a@b"}, ("a@b", "git user.email")),
        ({"USER": "me"}, {"name": "A B"}, ("A B", "git user.name")),
        ({"USER": "me"}, {}, ("me", "USER")),
    ],
)
def test_applied_by_order(
    environ: dict[str, str], config: dict[str, str], expected: tuple[str, str]
) -> None:
    assert applied_by(_Config(**config), environ) == expected


def test_ci_run_urls() -> None:
    github = {
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_REPOSITORY": "lab/exp",
        "GITHUB_RUN_ID": "42",
        "GITHUB_RUN_ATTEMPT": "2",
    }
    assert ci_run_url(github) == "https://github.com/lab/exp/actions/runs/42/attempts/2"
    assert ci_run_url({"CI_JOB_URL": "https://gitlab.example.org/lab/exp/-/jobs/7"}) == (
        "https://gitlab.example.org/lab/exp/-/jobs/7"
    )
    azure = {
        "SYSTEM_COLLECTIONURI": "https://dev.azure.com/org/",
        "SYSTEM_TEAMPROJECT": "proj",
        "BUILD_BUILDID": "9",
    }
    assert ci_run_url(azure) == "https://dev.azure.com/org/proj/_build/results?buildId=9"
    assert ci_run_url({}) is None


def test_the_ci_actor_and_run_are_recorded(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_manifest(repo, "a")
    commit(repo, "a")
    monkeypatch.setenv("GITHUB_ACTOR", "octocat")
    monkeypatch.setenv("GITHUB_SERVER_URL", "https://github.com")
    monkeypatch.setenv("GITHUB_REPOSITORY", "lab/exp")
    monkeypatch.setenv("GITHUB_RUN_ID", "42")
    facts = gather(repo, ["experiments/a.yaml"])["experiments/a.yaml"].facts
    assert facts["applied_by"] == "octocat" and facts["applied_by_source"] == "GITHUB_ACTOR"
    assert facts["ci_run_url"] == "https://github.com/lab/exp/actions/runs/42"


# --- the real CLI in a CI-like shallow checkout --------------------------------------------------


def _apply(clone: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        himl_command("apply", "--yes", *args),
        cwd=clone,
        env={**env_for(clone), "GITHUB_ACTOR": "octocat", **env},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


@pytest.mark.slow
def test_apply_in_a_shallow_checkout_records_the_real_commit_or_none(
    upstream: dict[str, str], tmp_path: Path, empty_store: Path
) -> None:
    clone = _clone(upstream, tmp_path / "ci", depth=1)
    shutil.copy(empty_store, clone / "mlflow.db")

    # deepening off: the commit is unknown, said once, and audit --commit cannot match it
    done = _apply(clone, "--target", "a", HIML_DEEPEN_TIMEOUT="0")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: shallow clone") == 1
    a = next(r for r in runs_json(clone) if r["experiment"] == "a")
    answer = json.loads(himl(clone, "audit", a["run_name"], "--format", "json").stdout)
    assert "manifest_commit" not in answer["provenance"]
    assert answer["provenance"]["manifest_commit_unknown"] == SHALLOW_UNKNOWN
    assert answer["provenance"]["applied_by"] == "octocat"
    done = himl(clone, "audit", "--commit", upstream["added"][:10])
    assert "No managed runs came from commit" in done.stdout
    assert "applied from a shallow clone" in done.stderr

    # deepening on (the default): the real commit, found by audit --commit
    done = _apply(clone, "--target", "b")
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("warning: shallow clone: fetched its full history") == 1
    done = himl(clone, "audit", "--commit", upstream["changed_b"][:10], "--format", "json")
    found = json.loads(done.stdout)["runs"]
    assert [(r["experiment"], r["matched"]) for r in found] == [("b", "manifest commit")]
