"""Helpers of the report tests: a real git repository, the real CLI in subprocesses, and the
expected numbers computed from each run's own metrics.csv."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

TINY = {"max_epochs": 3, "limit_train_batches": 4, "limit_val_batches": 2, "accelerator": "cpu"}
SEEDS = [0, 1, 2]
GITIGNORE = "outputs/\nmlflow.db\n.himl/\nmlartifacts/\n"


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def manifest(name: str, seeds: Any = SEEDS, **fields: Any) -> str:
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": name,
        "container": "HelloWorld",
        "seeds": seeds,
        "trainer": dict(TINY),
        **fields,
    }
    return yaml.safe_dump(document, sort_keys=False)


def init_repo(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "researcher@example.org")
    git(root, "config", "user.name", "Researcher")
    (root / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (root / "experiments").mkdir(exist_ok=True)
    return root


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def env(self, uri: str | None = None) -> dict[str, str]:
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri or self.uri}
        env.pop("HIML_TRACEBACK", None)
        return env

    def himl(self, *args: str, uri: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "himl_manifest.cli.main", *args]
        return subprocess.run(
            command, cwd=self.root, env=self.env(uri), capture_output=True, text=True, check=False
        )

    def json(self, *args: str, uri: str | None = None) -> Any:
        done = self.himl(*args, "--format", "json", uri=uri)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def runs(self) -> list[dict[str, Any]]:
        document = self.json("runs")
        runs: list[dict[str, Any]] = document["runs"]
        return runs

    def folders(self, experiment: str) -> dict[int, Path]:
        """Seed -> the run folder of each completed run of ``experiment``."""
        return {
            run["seed"]: Path(run["output_dir"])
            for run in self.runs()
            if run["experiment"] == experiment and run["status"] == "completed"
        }


def csv_final_metrics(folder: Path) -> dict[str, float]:
    """The final metrics of a run, from its own metrics.csv (Lightning's CSVLogger): test
    metrics as logged; of every other column the value of the last epoch and the minimum
    (every HelloWorld metric is a loss)."""
    with (folder / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    curves: dict[str, dict[int, float]] = {}
    finals: dict[str, float] = {}
    for row in rows:
        for key, text in row.items():
            if key in ("epoch", "step") or not text:
                continue
            if key.startswith("test"):
                finals[key] = float(text)
            else:
                curves.setdefault(key, {})[int(row["epoch"])] = float(text)
    for key, curve in curves.items():
        finals[f"{key}.last"] = curve[max(curve)]
        finals[f"{key}.best"] = min(curve.values())
    return finals


def csv_curves(folder: Path) -> dict[str, dict[int, float]]:
    with (folder / "metrics.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    curves: dict[str, dict[int, float]] = {}
    for row in rows:
        for key, text in row.items():
            if key not in ("epoch", "step") and text and not key.startswith("test"):
                curves.setdefault(key, {})[int(row["epoch"])] = float(text)
    return curves


def values_by_seed(project: Project, experiment: str, metric: str) -> dict[int, float]:
    return {
        seed: csv_final_metrics(folder)[metric]
        for seed, folder in sorted(project.folders(experiment).items())
    }


def ordered(values: dict[int, float], seeds: Sequence[int] = SEEDS) -> list[float]:
    return [values[seed] for seed in seeds]
