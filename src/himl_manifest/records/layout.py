"""The run folder: where local run folders go, their names and files, where checkpoints are in
them, and how a ``<run>[:<dir/>file.ckpt]`` reference maps to a file of one."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path, PurePosixPath

from himl_manifest import paths
from himl_manifest.errors import CheckpointError, ConfigError
from himl_manifest.model import DEFAULT_CHECKPOINT_FILE, split_run_reference

#: Local run folders live under this folder of the project (inside Azure ML: ``./outputs``).
OUTPUTS_DIR = "outputs"
#: Environment variable that overrides the project's outputs root.
OUTPUTS_ENV = "HIML_OUTPUTS"
#: The project settings file, in the project root (optional).
SETTINGS_FILE = "himl.yaml"
CHECKPOINT_DIR = "checkpoints"
#: The run spec handed to the job; the runner adds the resolved settings to it.
RUN_SPEC_FILE = "run_spec.json"
#: The one log of a run: the runner's log lines, and (local jobs) the process's own output.
LOG_FILE = "runner.log"
SUMMARY_FILE = "experiment_summary.txt"
#: ``himl run --input NAME=PATH`` names: the job input of the checkpoint a run starts or resumes
#: from, and the prefix of its Azure datasets' inputs (``dataset_0``, ... in manifest order among
#: the Azure datasets), each given as where the service put it on the compute.
INPUT_CHECKPOINT = "checkpoint"
INPUT_DATASET_PREFIX = "dataset_"
#: Set by an executor that already writes the job's output into the run's log file, so the
#: runner does not write its lines there a second time.
LOG_CAPTURED_ENV = "HIML_LOG_CAPTURED"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def outputs_root(root: Path | None = None) -> Path:
    """Where local run folders go, for apply's jobs and `himl-runner` alike: ``$HIML_OUTPUTS``,
    else ``outputs:`` in the project's ``himl.yaml``, else ``outputs/`` in the project root.
    A relative setting is relative to the project root; ``~`` is expanded."""
    root = (root or paths.project_root()).resolve()
    chosen = os.environ.get(OUTPUTS_ENV) or _setting(root, "outputs") or OUTPUTS_DIR
    path = Path(chosen).expanduser()
    return path if path.is_absolute() else root / path


def _setting(root: Path, key: str) -> str | None:
    """One value of the project's ``himl.yaml`` (None when there is no such file or key)."""
    settings = root / SETTINGS_FILE
    if not settings.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(settings.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{settings}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{settings}: expected a mapping of settings, e.g. `outputs: /data/runs`")
    unknown = sorted(set(map(str, data)) - {"outputs"})
    if unknown:
        raise ConfigError(f"{settings}: unknown setting(s) {', '.join(unknown)} (known: outputs)")
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{settings}: `{key}` must be a folder path (a non-empty string)")
    return value


def attempt_marker(run_name: str, attempt: int) -> str:
    """The line an executor writes into the run's log when it starts an attempt (a retry
    reuses the run folder: readers show the log from the newest marker on)."""
    return f"===== himl: attempt {attempt} of {run_name} ====="


def timestamp(now: dt.datetime | None = None) -> str:
    """UTC time in run-folder names, e.g. ``2026-11-27T191203.123456Z`` (sortable, file-safe)."""
    return (now or dt.datetime.now(dt.timezone.utc)).strftime("%Y-%m-%dT%H%M%S.%fZ")


def run_folder_name(run_name: str, now: dt.datetime | None = None) -> str:
    """``<timestamp>_<run name>``: the name of a new local run folder."""
    safe = _SAFE_NAME.sub("-", run_name).strip("-") or "run"
    return f"{timestamp(now)}_{safe}"


def path_in_run(relative: str) -> PurePosixPath:
    """Where ``<run>:<relative>`` points inside the run folder: nothing means
    ``checkpoints/last.ckpt``, a bare file name is in ``checkpoints/``, ``dir/file`` is relative
    to the run folder, a leading ``outputs/`` removed (inside Azure ML the run folder *is*
    ``outputs/``)."""
    if not relative or not relative.strip():
        return PurePosixPath(CHECKPOINT_DIR, DEFAULT_CHECKPOINT_FILE)
    path = PurePosixPath(relative.strip())
    if path.is_absolute() or ".." in path.parts:
        raise CheckpointError(f"checkpoint path {relative!r} must be relative, without '..'")
    if len(path.parts) == 1:
        return PurePosixPath(CHECKPOINT_DIR, path)
    if path.parts[0] == OUTPUTS_DIR:
        path = PurePosixPath(*path.parts[1:])
    return path


def parse_run_reference(reference: str) -> tuple[str, PurePosixPath]:
    """``<run>[:<dir/>file.ckpt]`` -> ``(run name or id, path inside its run folder)``."""
    run, relative = split_run_reference(reference)
    if not run:
        raise CheckpointError(f"checkpoint reference {reference!r} names no run")
    return run, path_in_run(relative)
