"""The whole team loop, as a team meets it in a repository of its own: `himl init`, an own
container package, a fine-tune reading the baseline's checkpoint from another manifest, the
pre-commit hook's entry on the one changed file, a Markdown plan, apply, a code change that the
plan shows, `--replace`, provenance from a shallow clone (as CI checks out), and prune.

Real git, the real `himl` executable in subprocesses, a real MLflow SQLite store and real
training (a tiny model, 1-2 epochs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from gitops_helpers import git

pytestmark = pytest.mark.slow

HIML = Path(sys.executable).with_name("himl")
HOOKS = Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml"

MODELS = '''"""The team's own container: HelloWorld's regression with its own learning rate."""

from himl_manifest.configs.hello_world import HelloWorld


class Blobs(HelloWorld):
    """A container of the team's package (found by name: blobs.models.Blobs)."""

    learning_rate: float = 0.05
'''

BASELINE = """\
apiVersion: himl/v1
kind: Experiment
name: blobs-baseline
container: blobs.models.Blobs
params:
  learning_rate: 0.05
seeds: [0]
trainer:
  max_epochs: 1
"""

FINETUNE = """\
apiVersion: himl/v1
kind: Experiment
name: blobs-finetune
container: blobs.models.Blobs
params:
  learning_rate: 0.01
seeds: [0]
trainer:
  max_epochs: 1
checkpoint:
  source:
    experiment: blobs-baseline
"""


def himl(
    repo: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "HIML_TRACEBACK", "GITHUB_ACTOR", "HIML_APPLIED_BY")
    }
    return subprocess.run(
        [str(HIML), *args],
        cwd=repo,
        env={**clean, "PYTHONPATH": str(repo), **(env or {})},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def ok(done: subprocess.CompletedProcess[str], code: int = 0) -> str:
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done.stdout


def hook(repo: Path, *changed: str) -> subprocess.CompletedProcess[str]:
    """The pre-commit hook this repository offers, run as pre-commit runs it: its entry, then
    the changed files that match its ``files`` pattern."""
    (spec,) = yaml.safe_load(HOOKS.read_text(encoding="utf-8"))
    entry = spec["entry"].split()
    assert entry[0] == "himl"
    return himl(repo, *entry[1:], *changed)


def kinds(repo: Path, *args: str) -> dict[str, str]:
    plan = json.loads(ok(himl(repo, "plan", "--format", "json", *args)))
    return {a["experiment"]: a["kind"] for a in plan["actions"]}


def test_a_team_repository_through_the_whole_loop(
    git_repo: Path, empty_store: Path, tmp_path: Path
) -> None:
    repo = git_repo
    ok(himl(repo, "init"))
    shutil.copy(empty_store, repo / "mlflow.db")  # the default store, migrated ahead of time
    (repo / "experiments/hello-world.yaml").unlink()  # the team's own experiments instead
    package = repo / "blobs"
    package.mkdir()
    (package / "__init__.py").write_text("", encoding="utf-8")
    (package / "models.py").write_text(MODELS, encoding="utf-8")
    (repo / "experiments/baseline.yaml").write_text(BASELINE, encoding="utf-8")
    (repo / "experiments/finetune.yaml").write_text(FINETUNE, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "blobs: baseline and fine-tune")

    # the hook on the one changed file resolves the fine-tune's reference to the baseline
    assert hook(repo, "experiments/finetune.yaml").returncode == 0
    # ... and catches a typo in params without importing the team's code
    (repo / "experiments/finetune.yaml").write_text(
        FINETUNE.replace("learning_rate: 0.01", "learning_rat: 0.01"), encoding="utf-8"
    )
    typo = hook(repo, "experiments/finetune.yaml")
    assert typo.returncode == 1
    assert "learning_rat" in typo.stdout and "learning_rate" in typo.stdout
    git(repo, "checkout", "--", "experiments/finetune.yaml")

    markdown = ok(himl(repo, "plan", "--format", "markdown"))
    assert "blobs-baseline" in markdown and "blobs-finetune" in markdown
    assert kinds(repo) == {"blobs-baseline": "create", "blobs-finetune": "create"}

    ok(himl(repo, "apply", "--yes"))
    assert ok(himl(repo, "plan")).strip() == "No changes."

    # a committed change to the team's model is planned as a replace, shown as a field change
    models = package / "models.py"
    models.write_text(MODELS.replace("0.05", "0.07"), encoding="utf-8")
    uncommitted = himl(repo, "plan")
    assert uncommitted.returncode == 0
    assert "uncommitted" in uncommitted.stdout + uncommitted.stderr
    git(repo, "commit", "-q", "-am", "blobs: another default learning rate")
    text = ok(himl(repo, "plan"))
    assert "code changed: blobs/" in text
    assert kinds(repo) == {"blobs-baseline": "replace", "blobs-finetune": "replace"}
    ok(himl(repo, "apply", "--yes"))
    assert ok(himl(repo, "plan")).strip() == "No changes."

    # --replace forces a new run of an experiment that is in sync
    assert kinds(repo, "--replace", "blobs-baseline")["blobs-baseline"] == "replace"
    bad = himl(repo, "plan", "--replace", "blobs-baselin")
    assert bad.returncode == 64 and "blobs-baseline" in bad.stderr

    # CI checks out a shallow clone: the fine-tune's manifest last changed below the boundary,
    # so its commit is recorded as unknown (never as HEAD) unless the clone is deepened
    change = git(repo, "log", "-1", "--format=%H", "--", "experiments/finetune.yaml").strip()
    git(repo, "commit", "-q", "--allow-empty", "-m", "an unrelated commit")
    clone = tmp_path / "ci"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)],
        check=True,
        capture_output=True,
    )
    shutil.copy(repo / "mlflow.db", clone / "mlflow.db")
    shutil.copytree(repo / "outputs", clone / "outputs", symlinks=True)
    head = git(clone, "rev-parse", "HEAD").strip()
    ok(
        himl(
            clone,
            "apply",
            "--yes",
            "--replace",
            "blobs-finetune",
            env={"HIML_DEEPEN_TIMEOUT": "0", "GITHUB_ACTOR": "ci-bot"},
        )
    )
    audit = json.loads(ok(himl(clone, "audit", "--commit", head, "--format", "json")))
    matched = [r for r in audit["runs"] if r["experiment"] == "blobs-finetune"]
    assert matched and {r["matched"] for r in matched} == {"HEAD at apply"}
    newest = max(matched, key=lambda r: r["attempt"])
    provenance = newest["provenance"]
    assert not provenance.get("manifest_commit")
    assert provenance.get("manifest_commit_unknown")
    assert provenance.get("applied_by") == "ci-bot"
    # deepened (the remote is reachable), the real commit is recorded and audit finds it
    ok(himl(clone, "apply", "--yes", "--replace", "blobs-finetune"))
    found = json.loads(ok(himl(clone, "audit", "--commit", change, "--format", "json")))
    assert any(
        r["experiment"] == "blobs-finetune" and r["matched"] == "manifest commit"
        for r in found["runs"]
    )

    # the fine-tune's manifest is deleted: its runs are orphans until apply --prune
    (clone / "experiments/finetune.yaml").unlink()
    assert kinds(clone)["blobs-finetune"] == "orphan"
    assert himl(clone, "plan", "--detailed-exitcode").returncode == 2
    ok(himl(clone, "apply", "--yes", "--prune"))
    done = himl(clone, "plan", "--detailed-exitcode")
    assert (done.returncode, done.stdout.strip()) == (0, "No changes."), done.stderr
