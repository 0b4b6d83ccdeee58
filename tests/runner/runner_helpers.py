"""Helpers of the runner tests (imported by conftest.py and the tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Keeps test runs short: few batches, no sanity check.
FAST = ("--limit_train_batches=4", "--limit_val_batches=2", "--num_sanity_val_steps=0")


def mlflow_client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def all_runs(uri: str) -> list[Any]:
    from mlflow.entities import ViewType

    client = mlflow_client(uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    return list(client.search_runs(ids, run_view_type=ViewType.ALL)) if ids else []


def new_store(folder: Path, template: Path) -> str:
    target = folder / "mlflow.db"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


def write_package(root: Path, name: str, files: dict[str, str]) -> None:
    """A Python package ``name`` in ``root`` with the given modules (dedented)."""
    package = root / name
    package.mkdir(parents=True, exist_ok=True)
    files = {"__init__.py": "", **files}
    for relative, text in files.items():
        target = package / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")


def run_flags(*args: str) -> list[Any]:
    """`himl-runner` with these flags, in this process; the run results."""
    from himl_manifest.runner.cli import parse_args
    from himl_manifest.runner.execute import execute

    settings = parse_args(list(args))
    assert settings is not None
    return execute(settings)


def run_cli_subprocess(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` in a fresh process."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("PYTEST_XDIST_WORKER", None)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass(frozen=True)
class TrainedRun:
    root: Path
    uri: str
    output_dir: Path
    run_id: str
    metrics: dict[str, float]

    @property
    def last(self) -> Path:
        return self.output_dir / "checkpoints" / "last.ckpt"
