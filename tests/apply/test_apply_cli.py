"""`himl apply` on saved plans and its refusals (the in-memory backend: nothing trains)."""

from __future__ import annotations

from pathlib import Path

from apply_helpers import commit, himl, write_manifest


def test_a_saved_plan_is_applied_exactly(repo: Path) -> None:
    write_manifest(repo, seeds=[0, 1])
    commit(repo, "two")
    saved = himl(repo, "plan", "--backend", "memory", "-o", "plan.json")
    assert saved.returncode == 0, saved.stderr
    done = himl(repo, "apply", "plan.json", "--backend", "memory", "--yes")
    assert done.returncode == 0, done.stderr
    assert "Plan: 2 to create." in done.stderr
    assert "Apply complete: 2 created. Runs: 2 completed." in done.stderr


def test_a_stale_plan_is_refused(repo: Path) -> None:
    write_manifest(repo, seeds=[0])
    commit(repo, "one")
    assert himl(repo, "plan", "--backend", "memory", "-o", "plan.json").returncode == 0
    write_manifest(repo, seeds=[0, 1])
    commit(repo, "two")
    done = himl(repo, "apply", "plan.json", "--backend", "memory", "--yes")
    assert done.returncode == 1
    assert "stale" in done.stderr
    assert "Apply complete" not in done.stderr


def test_a_saved_plan_fixes_its_options(repo: Path) -> None:
    write_manifest(repo)
    commit(repo, "one")
    assert himl(repo, "plan", "--backend", "memory", "-o", "plan.json").returncode == 0
    done = himl(repo, "apply", "plan.json", "--backend", "memory", "--target", "hello")
    assert done.returncode == 64
    assert "fixed by a saved plan" in done.stderr


def test_dirty_manifests_are_refused_by_the_cli(repo: Path) -> None:
    write_manifest(repo)
    done = himl(repo, "apply", "--backend", "memory", "--yes")
    assert done.returncode == 1
    assert "experiments/hello.yaml: not committed" in done.stderr
    allowed = himl(repo, "apply", "--backend", "memory", "--yes", "--allow-dirty")
    assert allowed.returncode == 0, allowed.stderr


def test_only_backends_that_exist_are_offered(repo: Path) -> None:
    done = himl(repo, "apply", "--backend", "cloud9", "--yes")
    assert done.returncode == 64
    assert "'cloud9' is not one of" in done.stderr
    helped = himl(repo, "apply", "--help")
    assert "[auto|local|azureml]" in helped.stdout and "memory" not in helped.stdout


def test_azureml_without_a_workspace_says_how_to_configure_one(repo: Path) -> None:
    done = himl(repo, "plan", "--backend", "azureml")
    assert done.returncode == 1
    assert "no Azure ML workspace found" in done.stderr and "config.json" in done.stderr
    assert "Traceback" not in done.stderr
