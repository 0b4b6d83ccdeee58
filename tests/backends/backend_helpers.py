"""Helpers of the backend tests (imported by their conftest and test modules)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from himl_manifest.backends.base import Backend, ProgressCallback
from himl_manifest.model import RunRecord
from himl_manifest.spec import RunSpec

FAKE_RUNNER = Path(__file__).with_name("fake_runner.py")

#: ``make_runs(name="hello", **top_level_fields) -> run specs`` (see conftest.make_runs).
MakeRuns = Callable[..., list[RunSpec]]


def fake_command(spec_file: Path, output_dir: Path) -> list[str]:
    """The job command of the fake runner (see fake_runner.py)."""
    return [sys.executable, str(FAKE_RUNNER), str(spec_file), str(output_dir)]


def run_all(
    backend: Backend,
    runs: list[RunSpec],
    *,
    attempts: dict[str, int] | None = None,
    progress: ProgressCallback | None = None,
) -> list[RunRecord]:
    """Submit ``runs`` and wait for them: what apply does. Returns their records."""
    backend.submit(runs, attempts=attempts)
    return backend.wait([run.run_name for run in runs], progress=progress)
