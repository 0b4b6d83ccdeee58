"""The run-store protocol, owned once: what a managed run looks like in any store.

Apply's backends and the runner inside a job both read and write runs through the names and
rules here, so a run looks the same whoever wrote it last:

- tag names (MLflow tags locally, Azure ML properties and tags) and the one length limit;
- MLflow's own source tags (git commit, branch, repository URL without credentials:
  :func:`strip_credentials`, the one place a remote URL loses its secrets) and the link of a
  resumed run to the run it continued;
- what the store records about a run's checkpoints (:func:`recorded_checkpoints`);
- the display name of a run, and the experiment it is filed under;
- status mapping between the store's words and :class:`~himl_manifest.model.RunStatus`;
- the run-folder layout: folder name, file names, where checkpoints are inside it, and how a
  ``<run>[:<dir/>file.ckpt]`` reference maps to a file of that folder.

Standard library only.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from himl_manifest import paths
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
#: The cross-validation fold of a fold's run (absent on runs without folds).
TAG_FOLD = "himl.fold"
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
#: When the run's process started, in seconds since the epoch (the local executor sets it with
#: the pid): the record's creation to this is queue time, this to the run's end run time.
TAG_STARTED_AT = "himl.started_at"
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
#: the runner each time it writes one and when the run ends: how any machine planning against
#: the store knows whether (and which) checkpoints a run has, without seeing its folder.
TAG_CHECKPOINTS = "himl.checkpoints"
#: The checkpoint files the runner also logged as MLflow artifacts of the run (same relative
#: paths, comma-separated), when the store is not a file on the training machine: another
#: machine downloads them to resume or start from.
TAG_CHECKPOINT_ARTIFACTS = "himl.checkpoints.artifacts"
#: Cosmetic manifest tags land under this prefix.
TAG_USER_PREFIX = "himl.tag."
#: MLflow's own tags: the display name and the description.
TAG_DISPLAY_NAME = "mlflow.runName"
TAG_NOTE = "mlflow.note.content"
#: MLflow's own tags: the run a resumed run continued (the UI nests it there), and the source
#: (the UI shows the commit, linked to the repository).
TAG_PARENT_RUN = "mlflow.parentRunId"
TAG_SOURCE_NAME = "mlflow.source.name"
TAG_SOURCE_TYPE = "mlflow.source.type"
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_GIT_BRANCH = "mlflow.source.git.branch"
TAG_GIT_REPO_URL = "mlflow.source.git.repoURL"
#: Tag-name prefixes a manifest's own ``tags`` never write as plain tags (they stay
#: ``himl.tag.<key>``): ours, and MLflow's.
RESERVED_TAG_PREFIXES = (TAG_PREFIX, "mlflow.")

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
    facts = {
        TAG_MANAGED: "true",
        TAG_RUN_NAME: run.run_name,
        TAG_EXPERIMENT: run.experiment,
        TAG_SEED: str(run.seed),
        TAG_SPEC_HASH: run.spec_hash,
        TAG_ATTEMPT: str(attempt),
        TAG_MANIFEST: run.manifest_path,
        **provenance_tags({**run.provenance, "conda_sha256": run.conda_sha256 or ""}),
    }
    if run.fold is not None:
        facts[TAG_FOLD] = str(run.fold)
    return facts


def stored_fold(facts: Mapping[str, str]) -> int | None:
    """The fold a run's facts record (:data:`TAG_FOLD`); None without one."""
    value = facts.get(TAG_FOLD)
    return int(value) if value is not None and value.isdigit() else None


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


def seconds(value: str | None) -> float | None:
    """A stored time in seconds since the epoch (``himl.started_at``); None when not one."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


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


def plain_tags(tags: Mapping[str, Any] | None) -> dict[str, str]:
    """A manifest's ``tags`` as the plain tags of its runs (``team: imaging`` -> tag ``team``),
    as a new run gets them and an in-place update changes them; keys under a reserved prefix
    (``himl.``, ``mlflow.``) are left to their ``himl.tag.<key>`` copy."""
    return {
        str(key): cap(value)
        for key, value in (tags or {}).items()
        if not str(key).startswith(RESERVED_TAG_PREFIXES)
    }


# --- MLflow's source tags --------------------------------------------------------------------

_SCHEME = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://", re.IGNORECASE)
#: Schemes whose user name is an account name (``ssh://git@host/...``), never a token.
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})


def strip_credentials(url: str) -> str:
    """A remote URL with no secret left in it.

    - URLs with a scheme (``https://``, ``git+https://``, ``ssh://``, ...): the whole userinfo
      (everything before the *last* ``@`` of the authority, so ``user:tok1@tok2@host`` loses
      both tokens), the query (``?private_token=...``, ``?access_token=...``: a git remote
      needs none) and the fragment are dropped. An ``ssh://`` user without a password is an
      account name and is kept (``ssh://git@host/r.git``).
    - scp-like remotes (``git@github.com:o/r.git``) and local paths are kept as they are; a
      password in an scp-like userinfo (``user:pw@host:path``) is dropped with its user.
    """
    match = _SCHEME.match(url)
    if match is None:
        return _strip_scp_like(url)
    scheme = match.group("scheme")
    rest = url[match.end() :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        keep_user = scheme.lower() in _SSH_SCHEMES and ":" not in userinfo and userinfo
        authority = f"{userinfo}@{host}" if keep_user else host
    path = re.split(r"[?#]", tail, maxsplit=1)[0]
    return f"{scheme}://{authority}{path}"


def _strip_scp_like(url: str) -> str:
    head, slash, tail = url.partition("/")
    userinfo, at, host = head.rpartition("@")
    if at and ":" in userinfo:
        return host + slash + tail
    return url


def source_tags(
    *,
    source: str,
    commit: str | None = None,
    branch: str | None = None,
    remote_url: str | None = None,
) -> dict[str, str]:
    """MLflow's own source tags of a run (its UI shows the commit natively): ``source`` (the
    manifest, or the command of a one-off run), and what git says, when it says it; the
    remote URL without credentials."""
    tags = {TAG_SOURCE_NAME: cap(source), TAG_SOURCE_TYPE: "LOCAL"}
    if commit:
        tags[TAG_GIT_COMMIT] = cap(commit)
    if branch:
        tags[TAG_GIT_BRANCH] = cap(branch)
    if remote_url:
        tags[TAG_GIT_REPO_URL] = cap(strip_credentials(remote_url))
    return tags


def run_source_tags(run: RunSpec) -> dict[str, str]:
    """The source tags of a managed run, from the git provenance apply stamped on it."""
    facts = run.provenance
    return source_tags(
        source=run.manifest_path or run.run_name,
        commit=facts.get("head_commit"),
        branch=facts.get("branch"),
        remote_url=facts.get("remote_url"),
    )


# --- checkpoints recorded in the store -------------------------------------------------------


def listing_files(listing: str | None) -> set[str] | None:
    """The files of a ``himl.checkpoints``-style listing (None: nothing was recorded)."""
    return None if listing is None else {f for f in listing.split(",") if f}


def recorded_checkpoints(tags: Mapping[str, str], status: RunStatus) -> set[str]:
    """The checkpoint files the store records for a run (``himl.checkpoints``), relative to
    its run folder. A run recorded by a version that did not write the tag while it trained
    (None from :func:`listing_files`) is taken to have ``checkpoints/last.ckpt`` when it
    completed, and none otherwise: the same rule for every store, and never a look at a disk."""
    files = listing_files(tags.get(TAG_CHECKPOINTS))
    if files is not None:
        return files
    return {str(path_in_run(""))} if status == RunStatus.COMPLETED else set()


def has_default_checkpoint(tags: Mapping[str, str], status: RunStatus) -> bool:
    """Whether the store records ``checkpoints/last.ckpt`` for a run (what a resume needs)."""
    return str(path_in_run("")) in recorded_checkpoints(tags, status)


# --- names -----------------------------------------------------------------------------------

_UNSAFE_EXPERIMENT = re.compile(r"[^A-Za-z0-9_.\- ]+")


def display_name(run_name: str, display: str | None = None) -> str:
    """What a run is called in the store's UI, one rule for runs made by apply, `himl run` and
    `himl-runner`: the chosen display name (``tracking.display_name``, ``--tag``), else its
    run name (which carries the seed; a one-off run's is :func:`one_off_run_name`). The runner
    never renames a run apply created."""
    return display or run_name


def one_off_run_name(experiment: str, seed: int) -> str:
    """The run name of a one-off ``himl-runner`` run (no manifest, so no spec hash):
    ``<experiment>-s<seed>``, a managed run name's shape without its hash."""
    return f"{experiment}-s{seed}"


def experiment_name(name: str | None, fallback: str) -> str:
    """The store experiment a run is filed under: ``name`` (the manifest's
    ``tracking.experiment``, ``--experiment``), else ``fallback`` (a manifest's experiment name;
    a one-off run's container class), with characters stores refuse (``/`` among them) made
    safe."""
    safe = _UNSAFE_EXPERIMENT.sub("_", str(name or fallback)).strip()
    return safe or "default"


def run_experiment(run: RunSpec) -> str:
    """The store experiment of a managed run: its ``tracking.experiment``, else the manifest's
    experiment name (never the container class: experiments sharing a container stay apart).

    Computed here, not as a default of the spec: a normalized spec holds the container's class
    name in ``tracking.experiment`` when the manifest sets none (earlier versions filed runs
    there, and that value is part of every spec hash), so that value is read as "unset": no
    spec hash changes. (A manifest that names its container's class as its experiment cannot
    be told apart from one that names none: its runs are filed under the manifest's name.)

    A run with no manifest (``himl-runner``'s imperative form, the reference's behaviour) keeps
    the experiment it names: the container's class unless ``--experiment`` says otherwise."""
    chosen = run.spec.get("tracking", {}).get("experiment")
    imperative = not run.manifest_path
    if not imperative and chosen == str(run.spec.get("container", "")).rsplit(".", 1)[-1]:
        chosen = None
    return experiment_name(chosen, run.experiment)


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


# --- listing ---------------------------------------------------------------------------------


def listed(record: RunRecord, history_of: Collection[str] | None) -> bool:
    """Whether ``list_runs(history_of=...)`` returns ``record``: every active record does; a
    history record (superseded, archived) when ``history_of`` is None or names its run."""
    active = record.state == Lifecycle.ACTIVE
    return active or history_of is None or record.run_name in history_of
