"""Code and conda in a run's identity, on real git repositories with a real user package.

The user package is never imported: its folder is found on disk and identified by git's tree
hash of its committed content. Conda files count for cluster runs only, by their meaning.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from himl_manifest import code_identity
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.errors import ConfigError
from himl_manifest.manifest.validate import validate_paths
from himl_manifest.model import ActionKind
from himl_manifest.operations.plan import desired_runs, make_plan
from himl_manifest.plan.model import Plan
from himl_manifest.plan.render import render_json, render_markdown, render_text
from himl_manifest.spec import HASH_VERSION

MODEL = '''"""The user's model: never imported by himl plan."""

from himl_manifest import LightningContainer


class Blobs(LightningContainer):
    hidden_size: int = 8

    def layers(self):
        return ["linear({hidden})"]
'''


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit(repo: Path, message: str = "change") -> None:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", message)


def write_manifest(repo: Path, name: str = "blobs", **fields: Any) -> None:
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": name,
        "container": "myproj.models.Blobs",
        "seeds": [0],
        "trainer": {"max_epochs": 1},
        **fields,
    }
    path = repo / "experiments" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with the package ``myproj`` and one manifest, all committed."""
    git(tmp_path, "init", "-q")
    (tmp_path / "myproj").mkdir()
    (tmp_path / "myproj" / "__init__.py").write_text("")
    (tmp_path / "myproj" / "models.py").write_text(MODEL)
    (tmp_path / ".gitignore").write_text("mlflow.db\n")
    write_manifest(tmp_path)
    commit(tmp_path, "first")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def apply(plan: Plan, backend: MemoryBackend) -> None:
    from himl_manifest.apply.execute import execute

    execute(plan, backend)


def add_layer(repo: Path) -> None:
    path = repo / "myproj" / "models.py"
    path.write_text(path.read_text().replace('["linear({hidden})"]', '["linear", "relu"]'))


# --- code ----------------------------------------------------------------------------------


def test_the_default_code_is_the_containers_package_by_its_committed_tree(repo: Path) -> None:
    (run,) = desired_runs(["experiments"])
    tree = git(repo, "rev-parse", "HEAD:myproj")
    assert run.spec["code"] == {"track": True, "identity": {"myproj/": f"git:{tree}"}}
    assert run.spec_hash.startswith(f"{HASH_VERSION}:")
    assert "myproj.models" not in sys.modules  # found on disk, never imported


def test_a_code_change_is_a_replace_shown_with_both_short_hashes(repo: Path) -> None:
    backend = MemoryBackend()
    apply(make_plan(["experiments"], backend), backend)
    before = git(repo, "rev-parse", "HEAD:myproj")
    assert not make_plan(["experiments"], backend).has_changes

    add_layer(repo)  # not committed: the run would use it, its identity is the last commit's
    dirty = make_plan(["experiments"], backend)
    assert not dirty.has_changes
    assert dirty.warnings == (
        "myproj/ has uncommitted changes: the run will use them but its identity is the last "
        "commit's (commit them, then plan again)",
    )
    assert "Warning: myproj/ has uncommitted changes" in render_text(dirty)
    assert "**Warning:** myproj/ has uncommitted changes" in render_markdown(dirty)
    assert json.loads(render_json(dirty))["warnings"] == list(dirty.warnings)

    commit(repo, "an extra layer")
    after = git(repo, "rev-parse", "HEAD:myproj")
    changed = make_plan(["experiments"], backend)
    (action,) = changed.actions
    assert action.kind == ActionKind.REPLACE and changed.warnings == ()
    assert action.reason.startswith("run-affecting fields changed (code of myproj/)")
    shown = f"code changed: myproj/ ({before[:7]} → {after[:7]})"
    assert shown in render_text(changed)
    assert shown in render_markdown(changed)
    (change,) = json.loads(render_json(changed))["actions"][0]["changes"]
    assert change == {
        "path": "code.identity.myproj/",
        "old": f"git:{before}",
        "new": f"git:{after}",
    }


def test_a_code_change_never_resumes(repo: Path) -> None:
    backend = MemoryBackend()
    apply(make_plan(["experiments"], backend), backend)
    add_layer(repo)
    write_manifest(repo, trainer={"max_epochs": 5})  # what alone would resume
    commit(repo)
    (action,) = make_plan(["experiments"], backend).actions
    assert action.kind == ActionKind.REPLACE
    assert [c.path for c in action.changes] == ["code.identity.myproj/", "trainer.max_epochs"]


def test_an_experiment_may_opt_out(repo: Path) -> None:
    write_manifest(repo, code={"track": False})
    commit(repo)
    backend = MemoryBackend()
    apply(make_plan(["experiments"], backend), backend)
    add_layer(repo)
    commit(repo)
    result = make_plan(["experiments"], backend)
    assert not result.has_changes and result.warnings == ()
    assert desired_runs(["experiments"])[0].spec["code"] == {"track": False}


def test_explicit_paths_files_and_folders(repo: Path) -> None:
    (repo / "configs").mkdir()
    (repo / "configs" / "model.py").write_text("SIZE = 8\n")
    write_manifest(repo, code={"paths": ["./myproj/", "configs/model.py"]})
    commit(repo)
    (run,) = desired_runs(["experiments"])
    assert run.spec["code"]["identity"] == {
        "myproj/": "git:" + git(repo, "rev-parse", "HEAD:myproj"),
        "configs/model.py": "git:" + git(repo, "rev-parse", "HEAD:configs/model.py"),
    }
    backend = MemoryBackend()
    apply(make_plan(["experiments"], backend), backend)
    (repo / "configs" / "model.py").write_text("SIZE = 16\n")
    commit(repo)
    (action,) = make_plan(["experiments"], backend).actions
    assert [c.path for c in action.changes] == ["code.identity.configs/model.py"]


def test_a_code_path_that_does_not_exist_is_an_error_naming_file_and_field(repo: Path) -> None:
    write_manifest(repo, code={"paths": ["myproj/", "nowhere/"]})
    result = validate_paths([repo / "experiments"])
    (problem,) = result.diagnostics
    assert problem.file.endswith("experiments/blobs.yaml") and problem.line > 0
    assert (problem.path, problem.message) == (
        "code.paths[1]",
        "code path 'nowhere/' does not exist",
    )
    write_manifest(repo, code={"paths": ["../outside"]})
    assert "outside the repository" in validate_paths([repo / "experiments"]).diagnostics[0].message


def test_expand_refuses_a_missing_path_naming_the_manifest(repo: Path) -> None:
    from himl_manifest.manifest.build import normalize
    from himl_manifest.spec import Experiment, expand

    spec = normalize(
        {"apiVersion": "himl/v1", "kind": "Experiment", "name": "x", "container": "HelloWorld"}
    )
    spec["code"]["paths"] = ["gone/"]
    with pytest.raises(ConfigError, match=r"experiments/x\.yaml: code\.paths\[0\]: 'gone/'"):
        expand([Experiment("x", spec, "experiments/x.yaml", repo)])


def test_the_package_under_src(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "src" / "myproj").mkdir(parents=True)
    (tmp_path / "src" / "myproj" / "models.py").write_text(MODEL)
    write_manifest(tmp_path)
    commit(tmp_path)
    monkeypatch.chdir(tmp_path)
    (run,) = desired_runs(["experiments"])
    tree = git(tmp_path, "rev-parse", "HEAD:src/myproj")
    assert run.spec["code"]["identity"] == {"src/myproj/": f"git:{tree}"}


def test_code_not_committed_yet_has_no_identity_and_a_warning(repo: Path) -> None:
    (repo / "newpkg").mkdir()
    (repo / "newpkg" / "m.py").write_text("X = 1\n")
    write_manifest(repo, container="newpkg.m.Model")
    warnings: list[str] = []
    (run,) = desired_runs(["experiments"], warnings=warnings)
    assert run.spec["code"]["identity"] == {"newpkg/": None}
    assert warnings == [
        "newpkg/ is not committed: its runs' identity records no code until it is (commit it, "
        "then plan again)"
    ]


def test_python_caches_are_not_uncommitted_changes(repo: Path) -> None:
    (repo / "myproj" / "__pycache__").mkdir()
    (repo / "myproj" / "__pycache__" / "models.cpython-311.pyc").write_bytes(b"\0")
    warnings: list[str] = []
    desired_runs(["experiments"], warnings=warnings)
    assert warnings == []


def test_shipped_and_installed_packages_by_distribution_version(repo: Path) -> None:
    from importlib import metadata

    write_manifest(repo, "hello", container="HelloWorld")
    write_manifest(repo, "other", container="yaml.Thing")  # a package installed, not ours
    runs = {r.experiment: r for r in desired_runs(["experiments"])}
    version = metadata.version("himl-manifest")
    assert runs["hello"].spec["code"]["identity"] == {
        "himl_manifest": f"dist:himl-manifest=={version}"
    }
    assert runs["other"].spec["code"]["identity"] == {
        "yaml": f"dist:PyYAML=={metadata.version('PyYAML')}"
    }


def test_a_package_found_nowhere_warns(repo: Path) -> None:
    write_manifest(repo, container="no_such_pkg_xyz.Model")
    warnings: list[str] = []
    (run,) = desired_runs(["experiments"], warnings=warnings)
    assert run.spec["code"]["identity"] == {"no_such_pkg_xyz": None}
    assert warnings == [
        "package 'no_such_pkg_xyz' is neither in the repository nor installed: the code of its "
        "runs is not part of their identity"
    ]


def test_git_is_asked_once_per_repository_for_all_manifests(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(30):
        write_manifest(repo, f"exp-{index}", code={"paths": ["myproj/"]} if index % 2 else {})
    commit(repo)
    calls: list[list[str]] = []
    real = code_identity._git

    def counting(root: Path, args: list[str]) -> str | None:
        calls.append(args)
        return real(root, args)

    monkeypatch.setattr(code_identity, "_git", counting)
    runs = desired_runs(["experiments"])
    assert len(runs) == 31 and len({r.spec["code"]["identity"]["myproj/"] for r in runs}) == 1
    assert [args[0] for args in calls] == ["ls-tree", "status"]


def test_no_git_repository_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".git").mkdir()  # looks like a repository root, is none
    (tmp_path / "myproj").mkdir()
    write_manifest(tmp_path)
    monkeypatch.chdir(tmp_path)
    warnings: list[str] = []
    (run,) = desired_runs(["experiments"], warnings=warnings)
    assert run.spec["code"]["identity"] == {"myproj/": None}
    assert "is not a git repository with a commit" in warnings[0]


# --- conda -----------------------------------------------------------------------------------

CONDA = """name: proj
channels:
  - conda-forge
  - defaults
dependencies:
  - python=3.11
  - numpy>=1.26
  - pip
  - pip:
      - -r requirements.txt
      - rich==13.0
"""
#: The same environment: comments, blank lines, another name, dependencies reordered.
CONDA_SAME = """# the project's environment
name: renamed

channels: [conda-forge, defaults]
dependencies:
  - pip:            # pip packages
      - rich==13.0
      - -r requirements.txt
  - numpy>=1.26     # arrays
  - pip
  - python=3.11
"""


@pytest.fixture
def conda_repo(repo: Path) -> Path:
    (repo / "environment.yml").write_text(CONDA)
    (repo / "requirements.txt").write_text("# pinned\nrequests==2.31\n")
    write_manifest(repo, "cloud", compute={"target": "gpu-cluster"})
    commit(repo)
    return repo


def by_experiment(backend: MemoryBackend) -> dict[str, ActionKind]:
    return {a.experiment: a.kind for a in make_plan(["experiments"], backend).actions}


def test_conda_comments_and_order_change_nothing(conda_repo: Path) -> None:
    backend = MemoryBackend()
    apply(make_plan(["experiments"], backend), backend)
    (conda_repo / "environment.yml").write_text(CONDA_SAME)
    (conda_repo / "requirements.txt").write_text("requests==2.31  # the HTTP client\n\n")
    commit(conda_repo)
    assert by_experiment(backend) == {"blobs": ActionKind.KEEP, "cloud": ActionKind.KEEP}


def test_a_real_conda_change_replaces_cluster_runs_only(conda_repo: Path) -> None:
    backend = MemoryBackend()
    apply(make_plan(["experiments"], backend), backend)
    (conda_repo / "environment.yml").write_text(CONDA.replace("numpy>=1.26", "numpy>=2.0"))
    commit(conda_repo)
    assert by_experiment(backend) == {"blobs": ActionKind.KEEP, "cloud": ActionKind.REPLACE}
    (cloud,) = [a for a in make_plan(["experiments"], backend).actions if a.experiment == "cloud"]
    assert [c.path for c in cloud.changes] == ["environment.conda_sha256"]


def test_a_change_in_an_included_requirements_file_counts(conda_repo: Path) -> None:
    backend = MemoryBackend()
    apply(make_plan(["experiments"], backend), backend)
    (conda_repo / "requirements.txt").write_text("requests==2.32\n")
    assert by_experiment(backend) == {"blobs": ActionKind.KEEP, "cloud": ActionKind.REPLACE}


def test_channel_order_is_meaning() -> None:
    from himl_manifest.conda import conda_meaning

    first = conda_meaning({"channels": ["a", "b"], "dependencies": ["y", "x"]})
    assert first == {"channels": ["a", "b"], "dependencies": ["x", "y"]}
    assert conda_meaning({"channels": ["b", "a"], "dependencies": ["x"]})["channels"] == ["b", "a"]


# --- runs recorded under the previous identity version ------------------------------------------


def test_runs_recorded_under_v1_are_kept_while_their_manifest_matches(repo: Path) -> None:
    import dataclasses

    backend = MemoryBackend()
    (run,) = desired_runs(["experiments"])
    legacy = run.legacy_hash
    assert legacy is not None and legacy.startswith("v1:")
    old_name = f"blobs-s0-{legacy[3:11]}"
    legacy_spec = {k: v for k, v in run.spec.items() if k != "code"}
    old = dataclasses.replace(run, spec=legacy_spec, spec_hash=legacy, run_name=old_name)
    backend.submit([old])
    backend.wait([old_name])
    result = make_plan(["experiments"], backend)
    (action,) = result.actions
    assert (action.kind, action.previous, result.has_changes) == (
        ActionKind.KEEP,
        old_name,
        False,
    )
    assert "recorded under identity v1" in action.reason
    assert "1 run was recorded under identity v1" in result.warnings[0]

    write_manifest(repo, trainer={"max_epochs": 2})  # any change: a new run, under v2
    commit(repo)
    (action,) = make_plan(["experiments"], backend).actions
    assert action.kind == ActionKind.REPLACE
    assert action.reason.startswith(f"{old_name} was recorded under identity v1; ")


# --- the scenario, end to end: real training, the real CLI ------------------------------

USER_MODEL = '''"""A user's model: HelloWorld's regression, {layers}."""
import torch

from himl_manifest.configs.hello_world import HelloRegression, HelloWorld


class Regression(HelloRegression):
    def __init__(self, learning_rate: float = 0.1) -> None:
        super().__init__(learning_rate)
        self.model = {model}


class Blobs(HelloWorld):
    def create_model(self):
        return Regression(learning_rate=self.learning_rate)
'''
ONE_LAYER = USER_MODEL.format(layers="one layer", model="torch.nn.Linear(1, 1)")
TWO_LAYERS = USER_MODEL.format(
    layers="an extra layer",
    model="torch.nn.Sequential(torch.nn.Linear(1, 4), torch.nn.Linear(4, 1))",
)


def himl(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "himl_manifest.cli.main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


@pytest.mark.slow
def test_a_changed_model_is_planned_and_applied_as_a_new_run(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / ".gitignore").write_text("outputs/\nmlflow.db\nmlartifacts/\n.himl/\n")
    (tmp_path / "myproj").mkdir()
    (tmp_path / "myproj" / "__init__.py").write_text("")
    (tmp_path / "myproj" / "models.py").write_text(ONE_LAYER)
    trainer = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1}
    write_manifest(tmp_path, trainer={**trainer, "accelerator": "cpu"})
    commit(tmp_path, "one layer")
    first = himl(tmp_path, "apply", "--yes")
    assert first.returncode == 0, first.stderr
    assert himl(tmp_path, "plan").stdout == "No changes.\n"

    before = git(tmp_path, "rev-parse", "HEAD:myproj")
    (tmp_path / "myproj" / "models.py").write_text(TWO_LAYERS)
    dirty = himl(tmp_path, "plan", "--detailed-exitcode")
    assert dirty.returncode == 0 and "Warning: myproj/ has uncommitted changes" in dirty.stdout
    commit(tmp_path, "an extra layer")
    after = git(tmp_path, "rev-parse", "HEAD:myproj")
    changed = himl(tmp_path, "plan", "--detailed-exitcode")
    assert changed.returncode == 2, changed.stderr
    assert f"code changed: myproj/ ({before[:7]} → {after[:7]})" in changed.stdout
    assert "Plan: 1 to replace." in changed.stdout
    second = himl(tmp_path, "apply", "--yes")
    assert second.returncode == 0, second.stderr
    assert himl(tmp_path, "plan").stdout == "No changes.\n"
