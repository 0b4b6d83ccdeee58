"""`himl init`: what it writes, what it refuses to overwrite, and that running it twice is a
no-op. In-process CLI calls on real folders; the workflow and the hook config are checked
against the published schemas by check-jsonschema, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from himl_manifest import __version__
from himl_manifest.cli.main import cli, run_cli
from himl_manifest.manifest.schema import schema_text
from himl_manifest.operations.init import PLACEHOLDER_REPOSITORY, missing_lines

REPO_ROOT = Path(__file__).resolve().parents[2]
WRITTEN = (
    "experiments/hello-world.yaml",
    "schema/experiment.v1.schema.json",
    ".gitignore",
    ".pre-commit-config.yaml",
    ".github/workflows/himl.yml",
)
HOOK_REPO = "https://example.org/tools/himl-manifest"


def himl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def contents(root: Path) -> dict[str, str]:
    return {path: (root / path).read_text(encoding="utf-8") for path in WRITTEN}


def test_init_writes_the_scaffold_and_says_what_next(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = himl(capsys, "init", str(git_repo), "--hook-repo", HOOK_REPO)
    assert code == 0
    for path in WRITTEN:
        assert f"created     {path}" in out
    assert "Next steps:" in out and "himl apply --yes" in out
    assert "git init" not in out  # it is a repository already
    assert (git_repo / "schema/experiment.v1.schema.json").read_text() == schema_text()
    # the manifest's modeline points at the schema init wrote
    manifest = git_repo / "experiments/hello-world.yaml"
    first = manifest.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schema/experiment.v1.schema.json"
    assert (manifest.parent / first.split("$schema=")[1]).resolve() == (
        git_repo / "schema/experiment.v1.schema.json"
    )
    hooks = yaml.safe_load((git_repo / ".pre-commit-config.yaml").read_text())
    assert hooks == {
        "repos": [{"repo": HOOK_REPO, "rev": f"v{__version__}", "hooks": [{"id": "himl-validate"}]}]
    }
    workflow = (git_repo / ".github/workflows/himl.yml").read_text()
    assert f'HIML_VERSION: "{__version__}"' in workflow
    assert "@HIML_" not in workflow


def test_the_example_manifest_is_valid(git_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert himl(capsys, "init", str(git_repo))[0] == 0
    code, out, _ = himl(capsys, "validate", str(git_repo / "experiments"))
    assert (code, out) == (0, "1 file valid.\n")


def test_init_refuses_to_overwrite_and_writes_nothing(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (git_repo / ".github/workflows").mkdir(parents=True)
    (git_repo / ".github/workflows/himl.yml").write_text("name: mine\n")
    (git_repo / ".pre-commit-config.yaml").write_text("repos: []\n")
    code, _, err = himl(capsys, "init", str(git_repo))
    assert code == 1
    assert "would overwrite 2 file(s)" in err
    assert f"{git_repo}/.pre-commit-config.yaml" in err
    assert f"{git_repo}/.github/workflows/himl.yml" in err
    assert "--force" in err
    assert "Traceback" not in err
    # nothing was written: neither the conflicting files nor the others
    assert (git_repo / ".github/workflows/himl.yml").read_text() == "name: mine\n"
    assert not (git_repo / "experiments").exists()
    assert not (git_repo / ".gitignore").exists()


def test_force_overwrites(git_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (git_repo / ".pre-commit-config.yaml").write_text("repos: []\n")
    code, out, _ = himl(capsys, "init", str(git_repo), "--force", "--hook-repo", HOOK_REPO)
    assert code == 0
    assert "overwritten .pre-commit-config.yaml" in out
    assert HOOK_REPO in (git_repo / ".pre-commit-config.yaml").read_text()


def test_a_second_run_changes_nothing(git_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert himl(capsys, "init", str(git_repo), "--hook-repo", HOOK_REPO)[0] == 0
    before = contents(git_repo)
    code, out, _ = himl(capsys, "init", str(git_repo), "--hook-repo", HOOK_REPO)
    assert code == 0
    assert "Nothing to do" in out
    assert all(f"unchanged   {path}" in out for path in WRITTEN)
    assert contents(git_repo) == before


def test_gitignore_gets_only_the_missing_lines(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (git_repo / ".gitignore").write_text("__pycache__/\nmlflow.db\n.himl/")  # no final newline
    assert himl(capsys, "init", str(git_repo))[0] == 0
    lines = (git_repo / ".gitignore").read_text().splitlines()
    assert lines[:3] == ["__pycache__/", "mlflow.db", ".himl/"]
    for entry in ("mlflow.db", ".himl/", "outputs/", "mlartifacts/"):
        assert lines.count(entry) == 1, entry
    assert himl(capsys, "init", str(git_repo))[0] == 0
    assert (git_repo / ".gitignore").read_text().splitlines() == lines
    # what the tool writes is ignored by git: the store, its state, run folders
    for written in ("mlflow.db", ".himl/store_id", "mlartifacts/x", "outputs/run/last.ckpt"):
        done = subprocess.run(["git", "check-ignore", "-q", written], cwd=git_repo, check=False)
        assert done.returncode == 0, written


def test_missing_lines_never_appends_a_lone_comment() -> None:
    wanted = "# himl\nmlflow.db\nouts/\n"
    assert missing_lines("mlflow.db\nouts/\n", wanted) == []
    assert missing_lines("mlflow.db\n", wanted) == ["# himl", "outs/"]


def test_init_defaults_to_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = himl(capsys, "init")
    assert code == 0
    assert (tmp_path / "experiments/hello-world.yaml").is_file()
    assert "  git init\n" in out  # not a repository yet
    assert "cd " not in out


def test_a_placeholder_repository_is_pointed_out(
    git_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from himl_manifest.operations import init as operation

    monkeypatch.setattr(operation, "hook_repository", lambda: PLACEHOLDER_REPOSITORY)
    code, out, _ = himl(capsys, "init", str(git_repo))
    assert code == 0
    assert "placeholder repository" in out and "--hook-repo" in out


def test_a_file_where_the_folder_should_be_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "plain-file"
    target.write_text("x")
    code, _, err = himl(capsys, "init", str(target))
    assert code in (1, 64)
    assert "plain-file" in err and "Traceback" not in err


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    executable = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(executable), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
        timeout=120,
    )


@pytest.mark.parametrize(
    "schema", ["vendor.github-workflows", "custom.github-workflows-require-timeout"]
)
def test_the_workflow_is_a_valid_github_workflow(
    git_repo: Path, capsys: pytest.CaptureFixture[str], schema: str
) -> None:
    assert himl(capsys, "init", str(git_repo))[0] == 0
    done = check_jsonschema(schema, git_repo / ".github/workflows/himl.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_check_jsonschema_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The check above can fail: a workflow job without runs-on is rejected."""
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    steps:\n      - run: echo\n")
    assert check_jsonschema("vendor.github-workflows", broken).returncode == 1


def test_the_hook_config_names_a_hook_this_repository_offers(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert himl(capsys, "init", str(git_repo), "--hook-repo", HOOK_REPO)[0] == 0
    offered = yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())
    config = yaml.safe_load((git_repo / ".pre-commit-config.yaml").read_text())
    (entry,) = config["repos"]
    assert {hook["id"] for hook in entry["hooks"]} <= {hook["id"] for hook in offered}
    assert entry["rev"] == f"v{__version__}"
    pre_commit = pytest.importorskip("pre_commit.clientlib")
    pre_commit.load_config(str(git_repo / ".pre-commit-config.yaml"))


def test_the_documented_transcript_is_what_init_prints(
    git_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/gitops.md shows `himl init` in a git repository: the same lines, in order."""
    text = (REPO_ROOT / "docs" / "gitops.md").read_text(encoding="utf-8")
    block = text.split("```console\n$ himl init\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(git_repo)
    code, out, _ = himl(capsys, "init", "--hook-repo", HOOK_REPO)
    assert code == 0
    assert out == block
