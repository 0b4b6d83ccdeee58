"""The whole story, scripted, with the real CLI and real training in a real git repository:

apply 2 seeds -> no changes -> add a seed (plan creates only it) -> raise max_epochs (resume
the old seeds from their checkpoints) -> edit the description (update in place) -> delete the
manifest (orphans; --prune archives them), with `himl audit` answering at each step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apply_helpers import (
    TINY_TRAINER,
    commit,
    git,
    himl,
    mlflow_attempts,
    runs_json,
    write_manifest,
)

pytestmark = pytest.mark.slow


def audit(repo: Path, *args: str) -> dict[str, object]:
    done = himl(repo, "audit", *args, "--format", "json")
    assert done.returncode == 0, done.stderr
    answer: dict[str, object] = json.loads(done.stdout)
    return answer


def test_the_gitops_loop(repo: Path) -> None:
    manifest = write_manifest(repo, seeds=[0, 1], description="first")
    first = commit(repo, "hello: two seeds")

    # 1. apply two seeds
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Plan: 2 to create." in done.stderr
    assert "Apply complete: 2 created. Runs: 2 completed." in done.stderr
    runs = runs_json(repo)
    assert sorted((r["seed"], r["status"], r["sync"]) for r in runs) == [
        (0, "completed", "in sync"),
        (1, "completed", "in sync"),
    ]
    assert all("val_loss" in r["metrics"] for r in runs)
    s0 = next(r["run_name"] for r in runs if r["seed"] == 0)
    answer = audit(repo, s0)
    provenance = answer["provenance"]
    assert isinstance(provenance, dict)
    assert provenance["manifest_commit"] == first
    assert provenance["head_commit"] == first
    assert provenance["branch"] == "main"
    assert provenance["remote_url"] == "https://example.org/lab/exp.git"
    assert provenance["applied_by"] == "researcher@example.org"
    assert provenance["dirty"] is False
    assert provenance["manifest_blob"] == git(repo, "rev-parse", f"{first}:experiments/hello.yaml")
    assert answer["manifest_content"] == manifest.read_text().rstrip("\n")
    reproduce = answer["reproduce"]
    assert isinstance(reproduce, list) and [item["kind"] for item in reproduce] == ["plan"]
    assert reproduce[0]["command"].endswith(
        f"{first[:12]}) && cd {repo.parent / ('repo-' + first[:12])} && "
        "himl plan experiments --target hello --backend local --tracking-uri sqlite:///mlflow.db"
    )

    # 2. apply again right away: nothing to do
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("No changes.")

    # 3. add a seed: the plan creates that seed only
    write_manifest(repo, seeds=[0, 1, 2], description="first")
    commit(repo, "hello: a third seed")
    done = himl(repo, "plan", "--format", "json")
    assert done.returncode == 0, done.stderr
    actions = json.loads(done.stdout)["actions"]
    assert sorted((a["kind"], a["seed"]) for a in actions) == [
        ("create", 2),
        ("keep", 0),
        ("keep", 1),
    ]

    # 4. raise max_epochs: the old seeds resume from their checkpoints, the new one is created
    write_manifest(
        repo, seeds=[0, 1, 2], description="first", trainer={**TINY_TRAINER, "max_epochs": 2}
    )
    longer = commit(repo, "hello: two epochs")
    done = himl(repo, "apply", "--yes", "--jobs", "3")
    assert done.returncode == 0, done.stderr
    assert "Plan: 1 to create, 2 to resume." in done.stderr
    assert "Apply complete: 1 created, 2 resumed. Runs: 3 completed." in done.stderr
    runs = runs_json(repo)
    live = {r["seed"]: r for r in runs if r["state"] == "active"}
    assert sorted(live) == [0, 1, 2]
    assert all(r["status"] == "completed" and r["sync"] == "in sync" for r in live.values())
    assert sorted(r["seed"] for r in runs if r["sync"] == "superseded") == [0, 1]
    answer = audit(repo, live[0]["run_name"])
    assert answer["resume_from"] == s0
    assert isinstance(answer["provenance"], dict)
    assert answer["provenance"]["manifest_commit"] == longer
    commit_runs = audit(repo, "--commit", first[:8])["runs"]
    assert isinstance(commit_runs, list)
    assert sorted(r["seed"] for r in commit_runs) == [0, 1]

    # 5. edit the description: updated in place, no new run
    write_manifest(
        repo, seeds=[0, 1, 2], description="second", trainer={**TINY_TRAINER, "max_epochs": 2}
    )
    commit(repo, "hello: better words")
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Plan: 3 to update." in done.stderr
    assert "Apply complete: 3 updated." in done.stderr

    # 6. delete the manifest (another experiment takes its place, left out with --target):
    #    its runs are orphans, archived only with --prune
    manifest.unlink()
    write_manifest(repo, "other")
    gone = commit(repo, "hello: retired")
    done = himl(repo, "apply", "--yes", "--target", "hello")
    assert done.returncode == 0, done.stderr
    assert "Plan: 3 orphaned." in done.stderr
    assert "Nothing to apply: orphans are archived only with --prune." in done.stderr
    done = himl(repo, "apply", "--yes", "--prune", "--target", "hello")
    assert done.returncode == 0, done.stderr
    assert "Apply complete: 3 archived." in done.stderr
    runs = runs_json(repo)
    assert sorted(r["sync"] for r in runs) == ["archived"] * 3 + ["superseded"] * 2
    answer = audit(repo, live[2]["run_name"])
    assert answer["state"] == "archived"
    assert git(repo, "cat-file", "-t", gone) == "commit"

    # every (run name, attempt) exists exactly once
    attempts = mlflow_attempts(repo)
    assert len(attempts) == 5 and set(attempts.values()) == {1}
