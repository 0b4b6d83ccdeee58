"""`himl audit`'s reproduce commands, run as printed, on a real repository with a fine-tune
that starts from a baseline of another manifest (a cross-file reference), with real training:
they work, and they leave the live run store alone."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import commit, env_for, himl, init_repo, runs_json, write_manifest

pytestmark = pytest.mark.slow


def _shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``command`` exactly as audit printed it, in a shell, with ``himl`` on the PATH."""
    bin_dir = str(Path(sys.executable).parent)
    env = {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", "")}
    return subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def trained(tmp_path: Path, empty_store: Path) -> tuple[Path, str]:
    """A repository whose ``finetune`` (experiments/finetune.yaml) starts from ``baseline``
    (experiments/baseline.yaml), both applied and trained; and the commit applied."""
    import shutil

    repo = init_repo(tmp_path / "lab")
    shutil.copy(empty_store, repo / "mlflow.db")
    write_manifest(repo, "baseline")
    write_manifest(repo, "finetune", checkpoint={"source": {"experiment": "baseline"}})
    head = commit(repo, "baseline and fine-tune")
    done = himl(repo, "apply", "--yes")
    assert done.returncode == 0, done.stderr
    return repo, head


def test_printed_reproduce_commands_work_and_leave_the_live_store_alone(
    trained: tuple[Path, str], tmp_path: Path
) -> None:
    repo, head = trained
    live = runs_json(repo)
    finetune = next(r["run_name"] for r in live if r["experiment"] == "finetune")
    spec_file = tmp_path / "finetune.runspec.json"
    done = himl(repo, "audit", finetune, "--format", "json", "--write-spec", str(spec_file))
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    assert answer["format"] == "himl-audit/v2"
    kinds = {item["kind"]: item for item in answer["reproduce"]}
    assert sorted(kinds) == ["plan", "run"]
    assert json.loads(spec_file.read_text())["run_name"] == finetune
    store = repo / "mlflow.db"
    before = _digest(store)
    worktree = repo.parent / f"lab-{head[:12]}"

    # plan: the whole manifests folder (the baseline resolves), against a fresh store, even
    # with MLFLOW_TRACKING_URI naming the live one
    plan = kinds["plan"]["command"]
    assert f"git worktree add --detach {worktree} {head[:12]}" in plan
    assert "himl plan experiments --target finetune" in plan
    done = _shell(plan, repo, env_for(repo))
    assert done.returncode == 0, done.stderr
    assert "Plan: 2 to create." in done.stdout
    assert (worktree / "experiments" / "finetune.yaml").is_file()

    # run: the exact recorded spec, from the baseline's checkpoint in this checkout
    run = kinds["run"]["command"]
    assert "--input checkpoint=" in run
    done = _shell(run, repo, env_for(repo))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "run folder: " in done.stdout
    fresh = worktree / "mlflow.db"
    assert fresh.is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{fresh}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    produced = client.search_runs(experiments)
    assert [r.info.status for r in produced] == ["FINISHED"]
    assert "val_loss" in produced[0].data.metrics

    # the live store: not one byte changed, the same runs
    assert _digest(store) == before
    after = runs_json(repo)
    for a, b in zip(after, live, strict=True):
        assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}


def test_audit_json_gives_real_types(trained: tuple[Path, str]) -> None:
    repo, head = trained
    runs = runs_json(repo)
    name = next(r["run_name"] for r in runs if r["experiment"] == "baseline")
    done = himl(repo, "audit", name, "--format", "json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    facts = answer["provenance"]
    for key in ("dirty", "worktree_dirty", "tracked", "allow_dirty", "shallow"):
        assert isinstance(facts[key], bool), (key, facts[key])
    assert facts["dirty"] is False and facts["tracked"] is True and facts["shallow"] is False
    assert isinstance(answer["seed"], int) and isinstance(answer["attempt"], int)
    assert facts["manifest_commit"] == head
    for row in runs:
        assert isinstance(row["seed"], int) and isinstance(row["attempt"], int)
        assert all(isinstance(v, float) for v in row["metrics"].values())
        for key in ("start_time", "duration_s", "queued_s", "run_s"):
            assert isinstance(row[key], float), (key, row[key])
    done = himl(repo, "audit", "--commit", head[:8], "--format", "json")
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["format"] == "himl-audit/v2" and document["warnings"] == []
    assert all(run["provenance"]["dirty"] is False for run in document["runs"])
