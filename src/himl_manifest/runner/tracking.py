"""Recording a run in the run store: params, per-epoch metrics, tags, final status.

The store is :func:`himl_manifest.paths.tracking_uri` (SQLite ``mlflow.db`` in the project root
unless ``MLFLOW_TRACKING_URI`` or ``--tracking_uri`` says otherwise). ``--tracking_uri=none`` or
``HIML_TRACKING=off`` turns recording off (a GPU machine without MLflow).

Everything goes through the run-store protocol that apply uses too
(:class:`himl_manifest.backends.local_store.Store`, tag names and limits of
:mod:`himl_manifest.records`), so a run looks the same whoever wrote it last. When
``MLFLOW_RUN_ID`` is set (apply pre-creates the record and passes its id) the runner logs into
that run, creates no other and leaves its name alone. The run ends FINISHED on success; on
failure FAILED, with the last lines of the runner log in tag ``himl.error_tail``.

Checkpoints are recorded in the store, so any machine planning against it knows them: each time
the runner writes one (``last.ckpt`` every epoch, ``best_val_loss.ckpt`` when it improves) and
when the run ends, the tag ``himl.checkpoints`` lists the checkpoint files of the run folder
(written only when the listing changed). When the store is not a file on this machine (an MLflow
server: any URI but ``sqlite:`` and ``file:``), the checkpoints are also logged as MLflow
artifacts of the run (same paths, ``checkpoints/last.ckpt``), so another machine can resume
from them (:meth:`himl_manifest.backends.local.LocalStore.resolve_checkpoint` downloads them):
every listed checkpoint when the run ends (finished, failed or interrupted), and ``last.ckpt``
every :data:`CHECKPOINT_ARTIFACT_EPOCHS_ENV` epochs while it trains (default
:data:`DEFAULT_ARTIFACT_EPOCHS`; 0: only at the end), each upload replacing the previous one;
``himl.checkpoints.artifacts`` lists what was logged. :data:`CHECKPOINT_ARTIFACTS_ENV` says
``on`` (a shared SQLite file, say) or ``off`` instead of ``auto``. Inside Azure ML nothing is
uploaded: the service keeps ``outputs/``.

Every run gets MLflow's own source tags (``mlflow.source.name``, ``mlflow.source.git.commit``,
``.branch``, ``.repoURL`` without credentials): from the provenance apply stamped on a managed
run, else from git in the project (:mod:`.sources`). A run resumed from another run's
checkpoint gets ``mlflow.parentRunId``: the run it continued (its metric steps continue it).

Inside an Azure ML job (:func:`himl_manifest.paths.in_azureml`) MLflow is preconfigured by the
service: ``MLFLOW_TRACKING_URI`` is the workspace, and the job's own run (whose id is the job
name) is ``MLFLOW_RUN_ID``, else ``AZUREML_RUN_ID``. The runner records into that run through
the same code, but leaves its status to the service (which ends the job when the process
exits): it neither marks it running nor ends it, and a failure is only tagged.

``--log_from_vm`` (``tracking.log_from_vm`` in a manifest) records a run outside Azure ML in
the workspace as well: a run of its own there (never ``MLFLOW_RUN_ID``), in the same experiment
and with the same display name, params, metrics and tags, through the same code
(:class:`MlflowTracker` over the workspace's MLflow tracking URI, beside the local store's:
:class:`TeeTracker`). The workspace's URI is ``MLClient.workspaces.get(name)
.mlflow_tracking_uri`` (the workspace found as for `himl apply`: ``config.json`` upward from
the project, or the ``AZUREML_*`` variables; MLflow needs azureml-mlflow for ``azureml://``),
unless :data:`LOG_FROM_VM_URI_ENV` names the URI itself (a workspace URI already known, or any
MLflow tracking server). Inside an Azure ML job the flag does nothing: the job's run is in the
workspace already.

MLflow is imported only when a run is recorded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from himl_manifest import paths
from himl_manifest.errors import ConfigError, StoreError
from himl_manifest.records import (
    CHECKPOINT_DIR,
    MAX_TAG_VALUE,
    TAG_CHECKPOINT_ARTIFACTS,
    TAG_CHECKPOINTS,
    TAG_DISPLAY_NAME,
    TAG_ERROR,
    TAG_HOST,
    TAG_OUTPUT_DIR,
    cap,
    cap_tail,
    display_name,
    path_in_run,
)

TRACKING_ENV = "HIML_TRACKING"
RUN_ID_ENV = "MLFLOW_RUN_ID"
#: Set by Azure ML in every job: the job's name, which is its MLflow run id.
AZUREML_RUN_ID_ENV = "AZUREML_RUN_ID"
#: The tracking URI ``--log_from_vm`` records into, when given (else the workspace's).
LOG_FROM_VM_URI_ENV = "HIML_LOG_FROM_VM_URI"
#: Whether checkpoints are logged as MLflow artifacts: ``auto`` (default: when the store is not
#: a file on this machine), ``on`` or ``off``.
CHECKPOINT_ARTIFACTS_ENV = "HIML_CHECKPOINT_ARTIFACTS"
#: While a run trains, ``last.ckpt`` is logged as an artifact every this many epochs (0: only
#: when the run ends).
CHECKPOINT_ARTIFACT_EPOCHS_ENV = "HIML_CHECKPOINT_ARTIFACT_EPOCHS"
DEFAULT_ARTIFACT_EPOCHS = 5
_OFF = frozenset({"none", "off", "0", "false", "no"})
_ON = frozenset({"on", "1", "true", "yes", "always"})
#: Tracking URIs of a store that is a file on this machine (no artifacts needed to share); a
#: file path is one too. Every other URI (``http(s)://``, ``databricks``, ...) is shared.
_FILE_SCHEMES = ("sqlite:", "file:")
_LAST = str(path_in_run(""))
logger = logging.getLogger(__name__)


class Tracker(Protocol):
    run_id: str | None

    def log_metrics(self, entries: Sequence[tuple[Mapping[str, float], int]]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def checkpoint_saved(self, path: Path) -> None:
        """Called after each checkpoint file of the run folder is written (atomically)."""

    def record_checkpoints(self, folder: Path) -> None:
        """Called when the run ends (finished, failed or interrupted)."""

    def finish(self, status: str, error_tail: str = "") -> None: ...


class NullTracker:
    """Records nothing (tracking off, or a DDP process other than rank 0)."""

    run_id: str | None = None

    def log_metrics(self, entries: Sequence[tuple[Mapping[str, float], int]]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def checkpoint_saved(self, path: Path) -> None:
        pass

    def record_checkpoints(self, folder: Path) -> None:
        pass

    def finish(self, status: str, error_tail: str = "") -> None:
        pass


def logs_checkpoint_artifacts(uri: str) -> bool:
    """Whether a run recorded in ``uri`` logs its checkpoints as MLflow artifacts: when the
    store is not a file on this machine (:data:`CHECKPOINT_ARTIFACTS_ENV` ``auto``), never
    inside Azure ML (the service keeps ``outputs/``), or as that variable says."""
    chosen = os.environ.get(CHECKPOINT_ARTIFACTS_ENV, "auto").strip().lower() or "auto"
    if chosen in _OFF:
        return False
    if chosen in _ON:
        return True
    if chosen != "auto":
        raise ConfigError(f"{CHECKPOINT_ARTIFACTS_ENV}={chosen!r}: expected auto, on or off")
    local = uri.startswith(_FILE_SCHEMES) or uri.startswith(("/", ".", "~"))  # or a path
    return not local and not paths.in_azureml()


def artifact_epochs() -> int:
    """Every how many epochs ``last.ckpt`` is logged as an artifact while a run trains."""
    text = os.environ.get(CHECKPOINT_ARTIFACT_EPOCHS_ENV, "").strip()
    if not text:
        return DEFAULT_ARTIFACT_EPOCHS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"{CHECKPOINT_ARTIFACT_EPOCHS_ENV}={text!r}: expected a number of epochs (0: only "
            "when the run ends)"
        )
    return value


def resolved_uri(explicit: str | None) -> str | None:
    """The tracking URI to record into, or None when tracking is off."""
    if os.environ.get(TRACKING_ENV, "").strip().lower() in _OFF:
        return None
    if explicit and explicit.strip().lower() in _OFF:
        return None
    return paths.tracking_uri(explicit)


def existing_run_id() -> str | None:
    """The run to record into rather than create: ``MLFLOW_RUN_ID`` (apply's pre-created
    record; inside Azure ML the job's own run), else, inside Azure ML, ``AZUREML_RUN_ID``
    (the job's name, its run id)."""
    run_id = os.environ.get(RUN_ID_ENV)
    if run_id:
        return run_id
    if paths.in_azureml():
        return os.environ.get(AZUREML_RUN_ID_ENV) or None
    return None


def checkpoint_listing(folder: Path, limit: int = MAX_TAG_VALUE) -> str:
    """The checkpoint files of a run folder, relative to it and comma-separated
    (``checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt``): ``last.ckpt`` first, then by
    name; files being written (``.name.partial``) and names with a comma left out; whole names
    only, within ``limit`` characters (the value of tag ``himl.checkpoints``)."""
    checkpoints = folder / CHECKPOINT_DIR
    if not checkpoints.is_dir():
        return ""
    names = [
        path.relative_to(folder).as_posix()
        for path in checkpoints.rglob("*.ckpt")
        if path.is_file() and not path.name.startswith(".") and "," not in path.name
    ]
    names.sort(key=lambda name: (name != f"{CHECKPOINT_DIR}/last.ckpt", name))
    kept: list[str] = []
    length = -1
    for name in names:
        if length + 1 + len(name) > limit:
            break
        kept.append(name)
        length += 1 + len(name)
    return cap(",".join(kept), limit)


def _store(uri: str) -> Any:
    from himl_manifest.backends.local_store import Store

    return Store(uri)


class MlflowTracker:
    """One run of the store: the one apply created (``MLFLOW_RUN_ID``), else a new one.

    ``artifacts``: log the run's checkpoints as MLflow artifacts (None: as
    :func:`logs_checkpoint_artifacts` says for ``uri``)."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        name: str,
        *,
        reuse_existing: bool = True,
        artifacts: bool | None = None,
    ) -> None:
        self.uri = uri
        self.artifacts = logs_checkpoint_artifacts(uri) if artifacts is None else artifacts
        self.every = artifact_epochs() if self.artifacts else 0
        #: The run folder (set when recording starts), the last listing recorded, how many
        #: times last.ckpt was saved, and what was last logged of each file (mtime, size).
        self.folder: Path | None = None
        self._listing: str | None = None
        self._last_saves = 0
        self._logged: dict[str, tuple[int, int]] = {}
        existing = existing_run_id() if reuse_existing else None
        #: Inside Azure ML the service owns the job's status: never marked or ended here.
        self.owns_status = not paths.in_azureml()
        try:
            self.store = _store(uri)
            if existing:
                if self.store.get(existing) is None:
                    raise StoreError(f"no run {existing} (the run of this job: {RUN_ID_ENV})")
                self.run_id: str | None = existing
                if self.owns_status:
                    self.store.mark_running(existing)
                self.created = False
            else:
                experiment_id = self.store.experiment_id(experiment)
                tags = {TAG_DISPLAY_NAME: display_name(name)}
                self.run_id = self.store.create_run(experiment_id, tags)
                self.store.mark_running(self.run_id)
                self.created = True
        except StoreError as exc:
            raise StoreError(f"cannot record the run in {uri}: {exc}") from exc

    def log_params(self, params: Mapping[str, Any]) -> None:
        assert self.run_id is not None
        kept = self.store.log_params(self.run_id, params)
        if kept:
            logger.warning("params already recorded with other values, kept: %s", kept)

    def log_metrics(self, entries: Sequence[tuple[Mapping[str, float], int]]) -> None:
        if self.run_id is not None:
            self.store.log_metrics(self.run_id, entries)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        if tags and self.run_id is not None:
            self.store.set_tags(self.run_id, tags)

    def checkpoint_saved(self, path: Path) -> None:
        """A checkpoint was written: record the folder's listing when it changed; log
        ``last.ckpt`` as an artifact every :attr:`every` saves of it (epochs). A store that
        fails here is a warning, not the end of training: the run's end records them again."""
        if self.run_id is None or self.folder is None:
            return
        try:
            self._record_listing(self.folder)
            if self.every and path.name == Path(_LAST).name:
                self._last_saves += 1
                if self._last_saves % self.every == 0:
                    self._log_checkpoints(self.folder, [_LAST])
        except StoreError as exc:  # training goes on; the end of the run records them again
            logger.warning("could not record checkpoint %s in %s: %s", path.name, self.uri, exc)

    def record_checkpoints(self, folder: Path) -> None:
        """The run ends: record the listing; log every listed checkpoint as an artifact (those
        not logged since they last changed)."""
        if self.run_id is None:
            return
        listing = self._record_listing(folder)
        if self.artifacts:
            self._log_checkpoints(folder, [name for name in listing.split(",") if name])

    def _record_listing(self, folder: Path) -> str:
        listing = checkpoint_listing(folder)
        if listing != self._listing:
            self.set_tags({TAG_CHECKPOINTS: listing})
            self._listing = listing
        return listing

    def _log_checkpoints(self, folder: Path, names: Sequence[str]) -> None:
        logged = False
        for name in names:
            local = folder / name
            try:
                found = local.stat()
            except FileNotFoundError:
                continue
            version = (found.st_mtime_ns, found.st_size)
            if self._logged.get(name) == version:
                continue
            assert self.run_id is not None
            self.store.log_artifact(self.run_id, local, str(Path(name).parent.as_posix()))
            self._logged[name] = version
            logged = True
        if logged:
            self.set_tags({TAG_CHECKPOINT_ARTIFACTS: cap(",".join(sorted(self._logged)))})

    def finish(self, status: str, error_tail: str = "") -> None:
        if self.run_id is None:
            return
        if error_tail:
            self.set_tags({TAG_ERROR: cap_tail(error_tail)})
        if self.owns_status:
            self.store.terminate(self.run_id, status)


class TeeTracker:
    """Records into several trackers: the run store's (first: its run id is the run's) and
    the workspace's of ``--log_from_vm``. A failure of a later one is logged, not raised:
    the mirror must not fail the run."""

    def __init__(self, first: Tracker, *others: Tracker) -> None:
        self.trackers = [first, *others]
        self.run_id = first.run_id

    def _each(self, call: str, *args: Any) -> None:
        for index, tracker in enumerate(self.trackers):
            try:
                getattr(tracker, call)(*args)
            except Exception as exc:
                if index == 0:
                    raise
                where = getattr(tracker, "uri", "the workspace")
                logger.warning("could not record in %s (--log_from_vm): %s", where, exc)

    def log_metrics(self, entries: Sequence[tuple[Mapping[str, float], int]]) -> None:
        self._each("log_metrics", entries)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._each("set_tags", tags)

    def checkpoint_saved(self, path: Path) -> None:
        self._each("checkpoint_saved", path)

    def record_checkpoints(self, folder: Path) -> None:
        self._each("record_checkpoints", folder)

    def finish(self, status: str, error_tail: str = "") -> None:
        self._each("finish", status, error_tail)


def log_from_vm_uri(root: Path | None = None, config: str | Path | None = None) -> str | None:
    """The tracking URI ``--log_from_vm`` records into: :data:`LOG_FROM_VM_URI_ENV`, else the
    MLflow tracking URI of the project's Azure ML workspace; None inside an Azure ML job.
    Raises when there is no workspace, or it cannot be reached, before the run starts."""
    if paths.in_azureml():
        return None
    explicit = os.environ.get(LOG_FROM_VM_URI_ENV, "").strip()
    if explicit:
        return explicit
    from himl_manifest.backends.registry import remote_tracking_uri

    return remote_tracking_uri(
        root or paths.project_root(), None if config is None else str(config)
    )


def record_checkpoints(tracker: Tracker, folder: Path) -> None:
    """When the run ends: tag it with the checkpoint files of its folder (``himl.checkpoints``),
    how a store that cannot see the files knows which a run has; and log them as artifacts
    where the tracker does (see the module's docstring)."""
    tracker.record_checkpoints(folder)


def start(
    uri: str | None,
    *,
    experiment: str,
    name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    output_dir: Path,
    vm_uri: str | None = None,
) -> Tracker:
    """A tracker for this run, with its params and tags recorded (NullTracker when off).

    ``name`` names a run the runner creates itself (a one-off ``himl-runner`` run); a run that
    apply created keeps the display name apply gave it. ``vm_uri`` (``--log_from_vm``: see
    :func:`log_from_vm_uri`): the run is also recorded there, in a new run named ``name``."""
    trackers: list[Tracker] = []
    if uri is not None:
        trackers.append(_started(MlflowTracker(uri, experiment, name), params, tags, output_dir))
    if vm_uri is not None:
        # the mirror is for watching the run: its checkpoints are listed, not uploaded there
        mirror = MlflowTracker(vm_uri, experiment, name, reuse_existing=False, artifacts=False)
        trackers.append(_started(mirror, params, tags, output_dir))
    if not trackers:
        return NullTracker()
    return trackers[0] if len(trackers) == 1 else TeeTracker(*trackers)


def _started(
    tracker: MlflowTracker, params: Mapping[str, Any], tags: Mapping[str, str], output_dir: Path
) -> MlflowTracker:
    from himl_manifest.backends.local_lock import this_host

    tracker.folder = output_dir
    tracker.set_tags({TAG_OUTPUT_DIR: str(output_dir), TAG_HOST: this_host(), **tags})
    tracker.log_params(params)
    logger.info("recording run %s in %s", tracker.run_id, tracker.uri)
    return tracker


def fail_precreated(uri: str | None, error_tail: str) -> None:
    """Mark the run apply pre-created (``MLFLOW_RUN_ID``) FAILED: the runner failed before it
    could start recording. Inside Azure ML the job's run is only tagged (the service ends it
    failed when the process exits)."""
    run_id = existing_run_id()
    if uri is None or not run_id:
        return
    try:
        store = _store(uri)
        store.set_tags(run_id, {TAG_ERROR: cap_tail(error_tail)})
        if not paths.in_azureml():
            store.terminate(run_id, "FAILED")
    except Exception as exc:  # the error being reported matters more than this one
        logger.warning("could not mark run %s failed: %s", run_id, exc)


def resolve_run_checkpoint(reference: str, uri: str | None) -> tuple[Path, str]:
    """The checkpoint file of a run reference ``<run>[:<dir/>file.ckpt]``, resolved by the run
    store (the same rules as apply's backend; downloaded when the run logged it as an artifact
    and its folder is not on this machine), and the store's id of the run it belongs to."""
    from himl_manifest.backends.local import LocalStore
    from himl_manifest.errors import CheckpointError

    if uri is None:
        raise CheckpointError(f"cannot resolve run reference {reference!r}: tracking is off")
    path, run_id = LocalStore(uri, paths.project_root()).locate_checkpoint(reference)
    return Path(path), run_id
