"""Seeds x folds for real: `himl apply` of a HelloWorld manifest with 2 seeds and 2 folds trains
4 runs (real Lightning, real MLflow SQLite store, real git repository), and `himl report` sums
them up over (seed, fold), from the manifests and from the store alone."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from statistics import mean
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.slow

TINY = {"max_epochs": 1, "limit_train_batches": 4, "limit_val_batches": 2, "accelerator": "cpu"}
UNITS = [{"seed": s, "fold": f} for s in (0, 1) for f in (0, 1)]


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def himl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("HIML_TRACEBACK", None)
    command = [sys.executable, "-m", "himl_manifest.cli.main", *args]
    return subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, check=False)


def report(root: Path, *args: str) -> dict[str, Any]:
    done = himl(root, "report", "--format", "json", *args)
    assert done.returncode == 0, done.stderr
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def logged_test_mse(folder: Path) -> float:
    """The test MSE a run logged, from its own metrics.csv."""
    with (folder / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        return next(float(row["test_mse"]) for row in csv.DictReader(handle) if row["test_mse"])


@pytest.fixture(scope="module")
def applied(tmp_path_factory: pytest.TempPathFactory, empty_store: Path) -> Path:
    root = tmp_path_factory.mktemp("crossval") / "repo"
    (root / "experiments").mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "researcher@example.org")
    git(root, "config", "user.name", "Researcher")
    (root / ".gitignore").write_text("outputs/\nmlflow.db\n.himl/\nmlartifacts/\n")
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": "hello-cv",
        "container": "HelloWorld",
        "seeds": [0, 1],
        "crossval": {"folds": 2},
        "trainer": TINY,
    }
    (root / "experiments" / "hello-cv.yaml").write_text(yaml.safe_dump(document))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "cross-validation")
    shutil.copy(empty_store, root / "mlflow.db")
    done = himl(root, "apply", "--yes", "--jobs", "2")
    assert done.returncode == 0, done.stderr
    assert "4 completed" in done.stderr, done.stderr
    return root


def test_apply_trains_one_run_per_seed_and_fold(applied: Path) -> None:
    done = himl(applied, "runs", "--format", "json")
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    assert len(runs) == 4 and {r["status"] for r in runs} == {"completed"}
    names = sorted(r["run_name"] for r in runs)
    assert [n[: len("hello-cv-s0-f0")] for n in names] == [
        f"hello-cv-s{s}-f{f}" for s in (0, 1) for f in (0, 1)
    ]
    assert all(re.fullmatch(r"hello-cv-s\d-f\d-[0-9a-f]{8}", n) for n in names)
    for run in runs:
        folder = Path(run["output_dir"])
        assert (folder / "metrics.csv").is_file()
        resolved = json.loads((folder / "run_spec.json").read_text())["resolved"]["fields"]
        fold = int(run["run_name"].split("-")[3][1:])
        assert (resolved["crossval_count"], resolved["crossval_index"]) == (2, fold)
        assert resolved["random_seed"] == run["seed"]
    assert himl(applied, "plan", "--detailed-exitcode").returncode == 0  # nothing left to do


def test_a_report_over_seeds_and_folds(applied: Path) -> None:
    document = report(applied)
    [experiment] = document["experiments"]
    assert document["complete"] is True
    assert experiment["completed"] == UNITS and experiment["missing"] == []
    summary = experiment["metrics"]["test_mse"]
    assert summary["n"] == 4
    by_unit = {(r["seed"], r["fold"]): Path(r["output_dir"]) for r in experiment["runs"]}
    assert sorted(by_unit) == [(u["seed"], u["fold"]) for u in UNITS]
    values = [logged_test_mse(folder) for folder in by_unit.values()]
    assert summary["mean"] == pytest.approx(mean(values), rel=1e-6)


def test_a_report_from_the_store_alone_still_knows_the_folds(applied: Path, tmp_path: Path) -> None:
    """No manifest asks for the experiment: its runs are read from the store, folds included
    (the fold the store records with each run)."""
    (tmp_path / "other.yaml").write_text(
        yaml.safe_dump(
            {"apiVersion": "himl/v1", "kind": "Experiment", "name": "x", "container": "HelloWorld"}
        )
    )
    document = report(applied, "-m", str(tmp_path / "other.yaml"), "hello-cv")
    [experiment] = document["experiments"]
    assert experiment["source"] == "store"
    assert experiment["completed"] == UNITS
    assert experiment["metrics"]["test_mse"]["n"] == 4
