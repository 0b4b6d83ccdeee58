"""The run-store protocol, owned once: what a managed run looks like in any store.

Apply's backends and the runner inside a job both read and write runs through the names and
rules here, so a run looks the same whoever wrote it last:

- tag names (MLflow tags locally, Azure ML properties and tags) and the one length limit;
- the display name of a run, and the experiment it is filed under;
- status mapping between the store's words and :class:`~himl_manifest.model.RunStatus`;
- the run-folder layout: folder name, file names, where checkpoints are inside it, and how a
  ``<run>[:<dir/>file.ckpt]`` reference maps to a file of that folder.

Standard library only.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Mapping
from pathlib import PurePosixPath
from typing import Any

from himl_manifest.errors import CheckpointError, ConfigError
from himl_manifest.model import (
    DEFAULT_CHECKPOINT_FILE,
    Lifecycle,
    RunRecord,
    RunStatus,
    split_run_reference,
)
from himl_manifest.spec import RunSpec

# --- tags ------------------------------------------------------------------------------------

TAG_PREFIX = "himl."
TAG_MANAGED = "himl.managed"
TAG_RUN_NAME = "himl.run_name"
TAG_EXPERIMENT = "himl.experiment"
TAG_SEED = "himl.seed"
TAG_SPEC_HASH = "himl.spec_hash"
#: The RunSpec JSON; split over ``himl.spec.0``, ``.1``, ... with ``himl.spec.parts`` if long.
TAG_SPEC = "himl.spec"
TAG_SPEC_PARTS = "himl.spec.parts"
TAG_ATTEMPT = "himl.attempt"
TAG_STATE = "himl.state"
TAG_RESUME_FROM = "himl.resume_from"
TAG_MANIFEST = "himl.manifest_path"
TAG_OUTPUT_DIR = "himl.output_dir"
TAG_PID = "himl.pid"
TAG_HOST = "himl.host"
TAG_ERROR = "himl.error_tail"
#: The apply that created a record (its liveness lock lives in the store's state folder).
TAG_APPLY_ID = "himl.apply_id"
TAG_CONTAINER = "himl.container"
TAG_MODE = "himl.mode"
#: Prefix of provenance facts: himl.provenance.commit, .branch, ...
TAG_PROVENANCE = "himl.provenance."
#: The cosmetic view of the spec after an in-place update where properties are add-only (Azure
#: ML): JSON, split over ``.N`` parts with ``.parts`` when long.
TAG_COSMETIC = "himl.cosmetic"
TAG_COSMETIC_PARTS = "himl.cosmetic.parts"
#: The checkpoint files of a run folder, comma-separated (``checkpoints/last.ckpt,...``), set by
#: the runner at the end of a run: how a store that cannot see the files knows them.
TAG_CHECKPOINTS = "himl.checkpoints"
#: Cosmetic manifest tags land under this prefix.
TAG_USER_PREFIX = "himl.tag."
#: MLflow's own tags: the display name and the description.
TAG_DISPLAY_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"

#: Longest tag value written by anyone (MLflow allows 8000, Azure ML less: stay under both).
MAX_TAG_VALUE = 5000
#: Longest parameter value written (MLflow's limit is 6000).
MAX_PARAM_VALUE = 6000


def cap(value: object, limit: int = MAX_TAG_VALUE) -> str:
    """``value`` as a tag value: text, at most ``limit`` characters (the end is kept for logs)."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return text if len(text) <= limit else text[:limit]


def cap_tail(text: str, limit: int = MAX_TAG_VALUE) -> str:
    """The last ``limit`` characters of ``text`` (an error tail keeps its end)."""
    return text[-limit:]


def identity_facts(run: RunSpec, attempt: int) -> dict[str, str]:
    """The immutable facts every store records on a new managed run (MLflow tags, Azure ML
    properties): what makes it ours, its identity and attempt, its manifest, and provenance
    (with the conda file digest it is submitted with; ``""``: no conda file)."""
    return {
        TAG_MANAGED: "true",
        TAG_RUN_NAME: run.run_name,
        TAG_EXPERIMENT: run.experiment,
        TAG_SEED: str(run.seed),
        TAG_SPEC_HASH: run.spec_hash,
        TAG_ATTEMPT: str(attempt),
        TAG_MANIFEST: run.manifest_path,
        **provenance_tags({**run.provenance, "conda_sha256": run.conda_sha256 or ""}),
    }


def stored_provenance(facts: Mapping[str, str], spec_text: str) -> dict[str, str] | None:
    """The provenance facts of a stored run (``himl.provenance.*``), with the conda file digest
    it was submitted with, so the planner can tell a conda change apart from the other
    run-affecting changes (``""``: no conda file). Records written before that digest was a
    tag of its own decode it from the stored spec; None when that spec is damaged."""
    provenance = {
        key[len(TAG_PROVENANCE) :]: value
        for key, value in facts.items()
        if key.startswith(TAG_PROVENANCE)
    }
    if "conda_sha256" not in provenance:
        try:
            provenance["conda_sha256"] = RunSpec.from_json(spec_text).conda_sha256 or ""
        except ConfigError:
            return None
    return provenance


def stored_state(tags: Mapping[str, str], deleted: bool = False) -> Lifecycle:
    """A stored run's lifecycle state (``himl.state``; a run deleted in the store is archived)."""
    if deleted:
        return Lifecycle.ARCHIVED
    try:
        return Lifecycle(tags.get(TAG_STATE, Lifecycle.ACTIVE.value))
    except ValueError:
        return Lifecycle.ACTIVE


def provenance_tags(provenance: Mapping[str, Any]) -> dict[str, str]:
    return {
        f"{TAG_PROVENANCE}{key}": cap(value)
        for key, value in provenance.items()
        if value is not None
    }


# --- names -----------------------------------------------------------------------------------

_UNSAFE_EXPERIMENT = re.compile(r"[^A-Za-z0-9_.\- ]+")


def display_name(run_name: str, display: str | None = None) -> str:
    """What a run is called in the store's UI: the manifest's display name, else its run name
    (which already carries the seed). The runner never renames a run apply created."""
    return display or run_name


def experiment_name(name: str | None, fallback: str) -> str:
    """The store experiment a run is filed under: the manifest's ``tracking.experiment`` (or
    ``--experiment``), else ``fallback`` (the container class), with characters stores refuse
    (``/`` among them) made safe."""
    safe = _UNSAFE_EXPERIMENT.sub("_", str(name or fallback)).strip()
    return safe or "default"


# --- statuses --------------------------------------------------------------------------------

#: MLflow run statuses -> ours.
MLFLOW_TO_STATUS = {
    "SCHEDULED": RunStatus.QUEUED,
    "RUNNING": RunStatus.RUNNING,
    "FINISHED": RunStatus.COMPLETED,
    "FAILED": RunStatus.FAILED,
    "KILLED": RunStatus.CANCELLED,
}
#: Ours -> MLflow's.
STATUS_TO_MLFLOW = {status: word for word, status in MLFLOW_TO_STATUS.items()}
MLFLOW_ACTIVE = frozenset({"SCHEDULED", "RUNNING"})


def status_from_mlflow(word: str | None) -> RunStatus:
    return MLFLOW_TO_STATUS.get(str(word), RunStatus.QUEUED)


#: Azure ML job statuses -> ours. Terminal on Azure ML: Completed, Failed, Canceled,
#: NotResponding and Paused; the last two end a job without success, so a plan retries them
#: (a paused job does not resume by itself).
AZUREML_TO_STATUS = {
    "NotStarted": RunStatus.QUEUED,
    "Queued": RunStatus.QUEUED,
    "Preparing": RunStatus.QUEUED,
    "Provisioning": RunStatus.QUEUED,
    "Starting": RunStatus.RUNNING,
    "Running": RunStatus.RUNNING,
    "Finalizing": RunStatus.RUNNING,
    "CancelRequested": RunStatus.RUNNING,
    "Completed": RunStatus.COMPLETED,
    "Failed": RunStatus.FAILED,
    "Canceled": RunStatus.CANCELLED,
    "NotResponding": RunStatus.FAILED,
    "Paused": RunStatus.CANCELLED,
    "Unknown": RunStatus.QUEUED,
}
#: Azure ML statuses of a job that has ended.
AZUREML_TERMINAL = frozenset({"Completed", "Failed", "Canceled", "NotResponding", "Paused"})


def status_from_azureml(word: object) -> RunStatus:
    """An Azure ML job status (a string or the SDK's ``JobStatus``) -> ours; an unknown word
    is queued (not ended: a plan waits rather than resubmits)."""
    text = str(getattr(word, "value", word) or "")
    return AZUREML_TO_STATUS.get(text, RunStatus.QUEUED)


# --- the run folder --------------------------------------------------------------------------

#: Local run folders live under this folder of the project (inside Azure ML: ``./outputs``).
OUTPUTS_DIR = "outputs"
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


# --- listing ---------------------------------------------------------------------------------


def listed(record: RunRecord, history_of: Collection[str] | None) -> bool:
    """Whether ``list_runs(history_of=...)`` returns ``record``: every active record does; a
    history record (superseded, archived) when ``history_of`` is None or names its run."""
    active = record.state == Lifecycle.ACTIVE
    return active or history_of is None or record.run_name in history_of
