"""The pre-commit hook: its definitions, its entry run as pre-commit runs it, and the real
pre-commit installing the hook from a git repository of this package and running it on
commits that change one manifest of a folder."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

BASELINE = """apiVersion: himl/v1
kind: Experiment
name: blobs-baseline
container: HelloWorld
seeds: [0, 1]
"""
FINETUNE = """apiVersion: himl/v1
kind: Experiment
name: blobs-finetune
description: {description}
container: HelloWorld
checkpoint:
  source: {{experiment: blobs-baseline, seed: {seed}}}
"""


def _hook(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text())
    hooks = data if isinstance(data, list) else [h for r in data["repos"] for h in r["hooks"]]
    (hook,) = [h for h in hooks if h["id"] == "himl-validate"]
    return dict(hook)


def test_hook_definitions() -> None:
    offered = _hook(REPO_ROOT / ".pre-commit-hooks.yaml")
    assert offered["language"] == "python"
    assert offered["pass_filenames"] is True
    assert offered["entry"] == "himl validate --whole-folder"
    assert offered["files"] == r"^experiments/.*\.ya?ml$"
    assert "additional_dependencies" not in offered  # the base install, nothing more
    used = _hook(REPO_ROOT / ".pre-commit-config.yaml")
    assert used["entry"] == offered["entry"] and used["files"] == offered["files"]
    pattern = re.compile(str(offered["files"]))
    assert pattern.search("experiments/hello-world.yaml")
    assert pattern.search("experiments/sub/x.yml")
    assert not pattern.search("schema/experiment.v1.schema.json")


def _user_repo(root: Path) -> Path:
    (root / "experiments").mkdir(parents=True)
    (root / "experiments" / "blobs-baseline.yaml").write_text(BASELINE)
    (root / "experiments" / "finetune.yaml").write_text(
        FINETUNE.format(description="first", seed=1)
    )
    return root


def test_hook_entry_on_the_one_changed_file(tmp_path: Path) -> None:
    """What pre-commit runs when a commit changes only the fine-tune manifest."""
    entry = shlex.split(str(_hook(REPO_ROOT / ".pre-commit-hooks.yaml")["entry"]))
    himl = str(BIN / entry[0])
    repo = _user_repo(tmp_path)
    (repo / ".git").mkdir()

    def hook(*files: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([himl, *entry[1:], *files], cwd=repo, text=True, capture_output=True)

    ok = hook("experiments/finetune.yaml")
    assert (ok.returncode, ok.stdout) == (0, "2 files valid.\n"), ok.stderr
    (repo / "experiments" / "finetune.yaml").write_text(
        FINETUNE.format(description="first", seed=7)
    )
    failed = hook("experiments/finetune.yaml")
    assert failed.returncode == 1
    assert failed.stdout.startswith(
        "experiments/finetune.yaml:7:46: checkpoint.source.seed: "
        "experiment 'blobs-baseline' has no seed 7"
    )
    # a change to the baseline alone that breaks the fine-tune fails too
    (repo / "experiments" / "finetune.yaml").write_text(
        FINETUNE.format(description="first", seed=1)
    )
    (repo / "experiments" / "blobs-baseline.yaml").write_text(BASELINE.replace("[0, 1]", "[0]"))
    broken = hook("experiments/blobs-baseline.yaml")
    assert broken.returncode == 1
    assert "experiments/finetune.yaml:7:46: checkpoint.source.seed" in broken.stdout


# -- the real pre-commit ----------------------------------------------------------------------

HOOK_REPO_FILES = ("pyproject.toml", "README.md", ".pre-commit-hooks.yaml", "schema", "src")


def _git(repo: Path, *args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True, env=env
    )
    return done.stdout


def _init(repo: Path) -> None:
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "config", "user.email", "researcher@example.org")
    _git(repo, "config", "user.name", "Researcher")
    _git(repo, "config", "commit.gpgsign", "false")


def _hook_repository(root: Path) -> Path:
    """This package as a git repository at its release tag, as pre-commit clones it."""
    _init(root)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache")
    for name in HOOK_REPO_FILES:
        source = REPO_ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=ignore)
        else:
            shutil.copy2(source, root / name)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "release")
    version = re.search(
        r'^__version__ = "([^"]+)"$',
        (REPO_ROOT / "src" / "himl_manifest" / "__init__.py").read_text(),
        re.MULTILINE,
    )
    assert version
    _git(root, "tag", f"v{version.group(1)}")
    return root


@pytest.mark.slow
def test_real_pre_commit_on_a_commit_that_changes_only_the_fine_tune(tmp_path: Path) -> None:
    pre_commit = BIN / "pre-commit"
    if not pre_commit.exists():
        pytest.skip("pre-commit is not installed (it comes with the dev extra)")
    hooks = _hook_repository(tmp_path / "himl-manifest")
    (tag,) = _git(hooks, "tag").split()
    user = _user_repo(tmp_path / "user")
    _init(user)
    (user / ".pre-commit-config.yaml").write_text(
        f"repos:\n  - repo: {hooks.as_uri()}\n    rev: {tag}\n"
        "    hooks:\n      - id: himl-validate\n"
    )
    _git(user, "add", "-A")
    _git(user, "commit", "-q", "-m", "experiments")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home")}
    env.pop("HIML_TRACEBACK", None)
    subprocess.run([str(pre_commit), "install"], cwd=user, env=env, check=True, capture_output=True)

    def commit(message: str) -> subprocess.CompletedProcess[str]:
        _git(user, "add", "-A", env=env)
        return subprocess.run(
            ["git", "commit", "-m", message],
            cwd=user,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    finetune = user / "experiments" / "finetune.yaml"
    finetune.write_text(FINETUNE.format(description="second", seed=1))
    done = commit("fine-tune: a new description")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"himl validate\.+Passed", done.stdout + done.stderr)
    changed = _git(user, "show", "--name-only", "--format=", "HEAD").split()
    assert changed == ["experiments/finetune.yaml"]

    finetune.write_text(FINETUNE.format(description="second", seed=7))
    refused = commit("fine-tune from a seed that does not exist")
    assert refused.returncode != 0
    assert "experiment 'blobs-baseline' has no seed 7" in refused.stdout + refused.stderr

    # the hook's environment is the base install: no torch, no Lightning
    (python,) = (tmp_path / "pre-commit-home").glob("repo*/py_env-*/bin/python")
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.util as u; "
            "print([m for m in ('torch', 'lightning', 'pytorch_lightning', 'himl_manifest') "
            "if u.find_spec(m)])",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "['himl_manifest']"
