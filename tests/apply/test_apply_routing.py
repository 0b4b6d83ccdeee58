"""`himl plan` / `himl apply` route runs by `compute.target`; without a workspace, a cluster
target is refused before anything is submitted, and nothing authenticates anywhere."""

from __future__ import annotations

from pathlib import Path

from apply_helpers import commit, himl, runs_json, write_manifest


def test_a_cluster_target_without_a_workspace_submits_nothing(repo: Path) -> None:
    write_manifest(repo, name="here", seeds=[0])
    write_manifest(repo, name="there", seeds=[0], compute={"target": "gpu-cluster"})
    commit(repo, "two experiments")
    planned = himl(repo, "plan", "--no-color")
    assert planned.returncode == 0, planned.stderr
    assert "Plan: 2 to create." in planned.stdout
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 1
    assert "compute.target 'gpu-cluster' needs azureml: no Azure ML workspace found" in done.stderr
    assert "Traceback" not in done.stderr
    assert runs_json(repo) == []  # nothing submitted, the local run included


def test_local_targets_run_here_with_the_auto_backend(repo: Path) -> None:
    write_manifest(repo, name="here", seeds=[0])
    commit(repo, "one")
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Apply complete: 1 created." in done.stderr
