"""The local backend: an MLflow tracking store is the state, local processes do the work.

- State: every managed run is an MLflow run tagged ``himl.managed = true`` (plus the tags of
  :mod:`.base`), in the store at the tracking URI (default ``sqlite:///<root>/mlflow.db``).
  :meth:`LocalBackend.list_runs` is one bulk read: three SQL queries straight from an SQLite
  store (:mod:`.local_sql`, no MLflow import), else one paginated ``search_runs`` over the
  managed experiments.
- Roles: :class:`LocalStore` is the run store (apply's, and the runner's inside a job);
  :class:`LocalBackend` adds the executor: :meth:`LocalBackend.submit` creates the records
  (queued) under ``apply.lock`` and returns; :meth:`LocalBackend.wait` runs each as a
  `himl run` process (see :mod:`.local_jobs`), up to ``jobs`` at once.
- Interrupted runs: a record still queued or running whose process (on this host) is gone, or
  whose apply is gone before it started, is reported as cancelled, so the planner retries it.

Docs: ``docs/store.md``.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from himl_manifest.backends.base import (
    BackendBase,
    Capabilities,
    MetricHistories,
    Progress,
    ProgressCallback,
    SubmitOutcome,
    Submitted,
)
from himl_manifest.backends.local_jobs import (
    Job,
    JobCommand,
    Scheduler,
    earlier_run_folders,
    himl_run_command,
    new_output_dir,
    writable_folder,
)
from himl_manifest.backends.local_lock import (
    LivenessLock,
    apply_alive,
    exclusive,
    is_runner_of,
    this_host,
)
from himl_manifest.backends.local_records import apply_id_of, manifest_tags, run_tags, to_record
from himl_manifest.backends.local_store import Store, find_any
from himl_manifest.backends.local_uri import absolute_uri, sqlite_path, store_errors
from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import CheckpointError, StoreError
from himl_manifest.extras import require_train
from himl_manifest.model import Lifecycle, RunRecord, RunStatus, parse_enum, with_cosmetic
from himl_manifest.paths import project_root, tracking_uri
from himl_manifest.records import (
    TAG_CHECKPOINT_ARTIFACTS,
    TAG_ERROR,
    TAG_HOST,
    TAG_OUTPUT_DIR,
    TAG_PARENT_RUN,
    TAG_SPEC,
    TAG_SPEC_PARTS,
    TAG_STATE,
    TAG_USER_PREFIX,
    listed,
    listing_files,
    outputs_root,
    parse_run_reference,
    plain_tags,
    recorded_checkpoints,
    run_experiment,
    spec_from_tags,
    spec_tags,
    status_from_mlflow,
)
from himl_manifest.records.select import chosen_attempt, upstream_run
from himl_manifest.spec import RunSpec

STATE_DIR = ".himl"
LOCK_FILE = "apply.lock"
#: The id of the store this project's applies wrote to (``.himl/store_id``).
STORE_ID_FILE = "store_id"


class LocalStore:
    """The run-store role over an MLflow tracking store (used by apply and by the runner)."""

    name = "local"

    def __init__(self, tracking_uri_: str | None = None, root: Path | None = None) -> None:
        self.root = (root or project_root()).resolve()
        self.uri = absolute_uri(tracking_uri(tracking_uri_, self.root), self.root)
        self.store = Store(self.uri)
        db = sqlite_path(self.uri)
        self.state_dir = (db.parent if db else self.root) / STATE_DIR
        self.artifact_root = db.parent / "mlartifacts" if db else None
        self.host = this_host()
        self._writable = False

    def _before_change(self) -> None:
        """Before the first change a command makes: the store can be written, and is still
        the one it opened."""
        if not self._writable:
            self.store.check_writable()
            self._writable = True
        self.store.check_same()

    def check_continuity(self, *, confirmed: bool) -> list[str]:
        """Refuse (unless ``confirmed``) to run in a store that looks lost or replaced: one
        whose id is not the one ``.himl/store_id`` remembers, or one without a managed run
        while ``outputs/`` holds run folders. Returns the warnings to show when confirmed."""
        problems = []
        remembered = self._remembered_store_id()
        current = self.store.store_id()
        if remembered and current != remembered:
            problems.append(
                f"the run store {self.uri} is not the store this project's applies wrote to "
                f"(its id is {current or 'unset: a new store'}, {STATE_DIR}/{STORE_ID_FILE} "
                f"says {remembered})"
            )
        folders = earlier_run_folders(self.root)
        if folders and not self.store.managed_runs(full=False):
            problems.append(
                f"the run store {self.uri} holds no runs, but {outputs_root(self.root)} holds "
                f"{len(folders)} run folder(s) of earlier runs: was the store deleted or replaced?"
            )
        if problems and not confirmed:
            raise StoreError(
                "; ".join(problems) + ". Restore the store, or pass --yes to go on with this one "
                "(every run it does not hold trains again)"
            )
        return problems

    def _remembered_store_id(self) -> str | None:
        try:
            text = (self.state_dir / STORE_ID_FILE).read_text(encoding="utf-8").strip()
        except OSError:
            return None
        return text or None

    def _remember_store_id(self) -> None:
        store_id = self.store.ensure_store_id()
        if store_id and self._remembered_store_id() != store_id:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / STORE_ID_FILE).write_text(f"{store_id}\n", encoding="utf-8")

    # -- reading ---------------------------------------------------------------------------

    def list_runs(
        self, *, full: bool = True, history_of: Collection[str] | None = None
    ) -> list[RunRecord]:
        """Every managed run record (all attempts, all states), in one bulk read (history read
        light unless ``full``, and only of ``history_of`` when given)."""
        records = []
        for found in self.store.managed_runs(full=full, history_of=history_of):
            record = to_record(found)
            if record is not None and listed(record, history_of):
                records.append(self._liveness(record, apply_id_of(found)))
        records.sort(key=lambda r: (r.experiment, r.seed, r.run_name, r.attempt))
        return records

    def _liveness(self, record: RunRecord, apply_id: str | None) -> RunRecord:
        """Report a queued/running record whose process (or apply) is gone as cancelled."""
        if not record.in_progress or record.host != self.host:
            return record
        if record.pid is not None:
            if is_runner_of(record.pid, record.output_dir):
                return record
            message = f"interrupted: process {record.pid} is gone"
        elif apply_id and apply_alive(self.state_dir / "applies", apply_id):
            return record
        else:
            message = "interrupted: the apply that queued it is gone"
        return replace(record, status=RunStatus.CANCELLED, error_tail=message)

    def _records(self, run_name: str) -> list[tuple[RunRecord, Any]]:
        out = []
        for found in self.store.by_run_name(run_name):
            record = to_record(found)
            if record is not None:
                out.append((record, found))
        return out

    # -- metadata --------------------------------------------------------------------------

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        """Copy description, tags and display name of ``run`` onto every attempt of the run:
        the manifest's tags as ``himl.tag.<key>`` and as plain tags, as a new run gets them;
        tags the manifest dropped are removed (both forms)."""
        self._before_change()
        records = self._records(run_name)
        if not records:
            raise StoreError(f"no run named {run_name} in {self.uri}")
        for _record, found in records:
            old_tags: dict[str, str] = dict(found.data.tags)
            stored = spec_from_tags(old_tags)
            if stored is None:
                continue
            updated = replace(stored, spec=with_cosmetic(stored.spec, run.spec))
            new_tags = {**spec_tags(updated), **manifest_tags(updated)}
            stale = [
                key
                for key in old_tags
                if key.startswith((TAG_USER_PREFIX, f"{TAG_SPEC}.")) and key not in new_tags
            ]
            stale += [k for k in plain_tags(stored.spec.get("tags")) if k not in new_tags]
            stale += [k for k in (TAG_SPEC_PARTS, TAG_SPEC) if k in old_tags and k not in new_tags]
            self.store.set_tags(found.info.run_id, new_tags)
            self.store.delete_tags(found.info.run_id, sorted(set(stale)))

    def set_state(self, run_name: str, state: Lifecycle | str) -> None:
        """Mark every attempt of ``run_name`` superseded, archived (or active again)."""
        lifecycle: Lifecycle = parse_enum(Lifecycle, state, "run state")
        self._before_change()
        records = self._records(run_name)
        if not records:
            raise StoreError(f"no run named {run_name} in {self.uri}")
        for record, _ in records:
            self.store.set_tags(record.run_id, {TAG_STATE: lifecycle.value})

    def metric_histories(self, run_ids: Collection[str]) -> MetricHistories:
        """Every logged value of the runs' metrics: one SQL read of an SQLite store
        (:mod:`.local_metrics`), else MLflow's client (one request per run and metric)."""
        from himl_manifest.backends import local_metrics

        db = sqlite_path(self.uri)
        found = local_metrics.read_histories(db, run_ids) if db is not None else None
        if found is not None:
            return found
        with store_errors(self.uri, "reading metric histories"):
            return local_metrics.client_histories(self.store.client, run_ids)

    # -- checkpoints -----------------------------------------------------------------------

    def find_run(self, reference: str) -> RunRecord | None:
        """The newest attempt of a run name (a completed one first), or the run with that id."""
        records = [record for record, _ in self._records(reference)]
        if records:
            return chosen_attempt(records)
        found = self.store.get(reference) if reference.isalnum() else None
        return to_record(found) if found is not None else None

    def resolve_checkpoint(self, reference: str) -> str:
        """``<run>[:<dir/>file.ckpt]`` -> a local file (see :meth:`locate_checkpoint`)."""
        return self.locate_checkpoint(reference)[0]

    def locate_checkpoint(self, reference: str) -> tuple[str, str]:
        """``<run>[:<dir/>file.ckpt]`` -> (a local file, the MLflow run id it belongs to), from
        the newest attempt that has it: the file in the run's folder when that folder is on
        this machine, else the copy the runner logged as an MLflow artifact, downloaded
        (:meth:`download_checkpoint`). The run
        is found by its himl run name, its MLflow run id or its MLflow run name (one-off
        ``himl-runner`` runs included). The error says whether the store records no such
        checkpoint, or records one that is neither here nor logged as an artifact."""
        name, inside = parse_run_reference(reference)
        runs = [run for run in find_any(self.store, name) if run.data.tags.get(TAG_OUTPUT_DIR)]
        if not runs:
            raise CheckpointError(
                f"checkpoint {reference!r}: no run {name!r} with a run folder in {self.uri}; a "
                "run is found by its himl run name, MLflow run id or MLflow run name"
            )
        wanted = str(inside)
        elsewhere = []
        for run in runs:
            tags = run.data.tags
            folder = Path(str(tags[TAG_OUTPUT_DIR]))
            run_id = str(run.info.run_id)
            if (folder / inside).is_file():
                return str(folder / inside), run_id
            if wanted in (listing_files(tags.get(TAG_CHECKPOINT_ARTIFACTS)) or set()):
                return str(self.download_checkpoint(run, wanted)), run_id
            if wanted in recorded_checkpoints(tags, status_from_mlflow(run.info.status)):
                host = tags.get(TAG_HOST)
                gone = " (no longer there)" if host == self.host else ""
                elsewhere.append(f"written to {folder / inside} on {host or 'its machine'}{gone}")
        if elsewhere:
            raise CheckpointError(
                f"checkpoint {reference!r}: run {name} has {inside} recorded in the store, but "
                f"not on this machine and not logged as an artifact ({', '.join(elsewhere)}): "
                "resume where it trained, copy the run folder here, or record runs in an MLflow "
                "server so their checkpoints are logged as artifacts"
            )
        looked = ", ".join(str(Path(str(run.data.tags[TAG_OUTPUT_DIR])) / inside) for run in runs)
        raise CheckpointError(
            f"checkpoint {reference!r}: run {name} has no {inside} recorded in the store ({looked})"
        )

    def download_checkpoint(self, run: Any, path: str) -> Path:
        """The artifact ``path`` of an MLflow run, downloaded into
        ``.himl/cache/runs/<run id>/<path>`` of this project; a run that has ended keeps its
        artifacts, so its download is reused; a run still going is downloaded again."""
        run_id = str(run.info.run_id)
        target = self.root / STATE_DIR / "cache" / "runs" / run_id / path
        ended = status_from_mlflow(run.info.status) not in (RunStatus.QUEUED, RunStatus.RUNNING)
        if ended and target.is_file():
            return target
        return self.store.download_artifact(run_id, path, target)


def _continued(attempts: list[tuple[RunRecord, Any]]) -> str | None:
    """The MLflow run id a resumed run continues: of the attempts of the run it resumes, the
    newest completed one, else the newest (the attempt :meth:`LocalStore.find_run` picks)."""
    chosen = chosen_attempt([record for record, _ in attempts])
    return chosen.run_id if chosen is not None else None


class LocalBackend(LocalStore, BackendBase):
    """The local store, and an executor running each run as a local `himl run` process."""

    capabilities = Capabilities(waits_locally=True, multi_node=False)

    def __init__(
        self,
        tracking_uri_: str | None = None,
        root: Path | None = None,
        *,
        jobs: int = 1,
        job_command: JobCommand | None = None,
        poll_s: float = 0.2,
    ) -> None:
        super().__init__(tracking_uri_, root)
        self.jobs = max(1, jobs)
        self.job_command = job_command or himl_run_command
        self.poll_s = poll_s
        self._pending: list[Job] = []
        self._external: dict[str, str] = {}
        self._liveness_lock: LivenessLock | None = None
        self._apply_id = ""

    # -- the executor ----------------------------------------------------------------------

    def preflight(
        self, runs: Sequence[RunSpec], *, expected: Collection[str] = ()
    ) -> list[Diagnostic]:
        """Runs execute here as `himl run` in this Python: without the train extra, nothing
        of the apply is sent anywhere (BackendUnavailable with the install hint)."""
        if runs and self.job_command is himl_run_command:
            require_train()
        return []

    def submit(
        self, runs: Sequence[RunSpec], *, attempts: Mapping[str, int] | None = None
    ) -> list[Submitted]:
        """Create the records (queued, under the apply lock); they run in :meth:`wait`.

        Until then this process holds a liveness lock: if it dies first, the next reader sees
        the records' apply gone and reports them cancelled, so the next apply retries them."""
        if runs and self.job_command is himl_run_command:
            require_train()  # the job is `himl run` in this Python: check before any record
        self._before_change()
        if self._liveness_lock is None:
            self._apply_id = uuid.uuid4().hex[:16]
            self._liveness_lock = LivenessLock(self.state_dir / "applies", self._apply_id)
            self._liveness_lock.acquire()
        try:
            with exclusive(self.state_dir / LOCK_FILE):
                self._remember_store_id()
                batch, outcomes = self._create(runs, attempts or {})
        except BaseException:
            if not self._pending:
                self._release()
            raise
        self._pending.extend(batch)
        names = {job.name for job in self._pending} | set(self._external)
        for job in self._pending:
            job.upstream = {upstream_run(job.run.spec) or ""} & names
        return outcomes

    def wait(
        self, run_names: Collection[str], *, progress: ProgressCallback | None = None
    ) -> list[RunRecord]:
        """Run the submitted jobs (up to ``jobs`` at once, dependents after their upstream)
        and wait for all to end; return the records of ``run_names``."""
        emit: ProgressCallback = progress or (lambda _: None)
        batch, self._pending = self._pending, []
        try:
            for job in batch:
                emit(Progress(job.name, RunStatus.QUEUED, f"attempt {job.attempt}"))
            scheduler = Scheduler(
                store=self.store,
                command=self.job_command,
                progress=emit,
                jobs=self.jobs,
                poll_s=self.poll_s,
                external=self._external,
            )
            scheduler.run(batch)
        finally:
            self._release()
        self.store.check_same()  # what the runs recorded is in the store this apply opened
        names = set(run_names)
        return [r for r in self.list_runs() if r.run_name in names]

    def _release(self) -> None:
        if self._liveness_lock is not None:
            self._liveness_lock.release()
            self._liveness_lock = None

    def _create(
        self, runs: Sequence[RunSpec], attempts: Mapping[str, int]
    ) -> tuple[list[Job], list[Submitted]]:
        """Check and create every record; returns the jobs to run and each run's outcome."""
        existing: dict[str, list[tuple[RunRecord, Any]]] = {}
        for found in self.store.managed_runs():
            record = to_record(found)
            if record is not None:
                existing.setdefault(record.run_name, []).append((record, found))
        experiment_ids: dict[str, str] = {}
        batch: list[Job] = []
        outcomes: list[Submitted] = []
        creating: list[tuple[RunSpec, int, list[tuple[RunRecord, Any]], Path]] = []
        for run in runs:
            attempt = attempts.get(run.run_name, 1)
            previous = existing.get(run.run_name, [])
            done = [r for r, _ in previous if r.attempt >= attempt]
            if done:
                # this attempt (or a later one) was made meanwhile, e.g. by a concurrent apply
                record = max(done, key=lambda r: r.attempt)
                if any(r.spec_hash != run.spec_hash for r in done):
                    message = f"exists with spec hash {record.spec_hash}, not {run.spec_hash}"
                    outcomes.append(
                        Submitted(run.run_name, attempt, SubmitOutcome.CONFLICT, record, message)
                    )
                    continue
                self._external[run.run_name] = record.run_id
                outcomes.append(Submitted(run.run_name, attempt, SubmitOutcome.EXISTED, record))
                continue
            dirs = [r.output_dir for r, _ in sorted(previous, key=lambda p: p[0].attempt)]
            output_dir = Path(dirs[-1]) if dirs and dirs[-1] else None
            creating.append(
                (run, attempt, previous, output_dir or new_output_dir(self.root, run.run_name))
            )
        for folder in {output_dir for *_, output_dir in creating}:
            writable_folder(folder)  # before any record: a run that can't start spends nothing
        for run, attempt, previous, output_dir in creating:
            self._end_interrupted(previous)
            experiment = run_experiment(run)
            if experiment not in experiment_ids:
                experiment_ids[experiment] = self.store.experiment_id(
                    experiment, self.artifact_root
                )
            tags = run_tags(run, attempt, output_dir, self.host, self._apply_id)
            parent = _continued(existing.get(run.resume_from or "", []))
            if parent is not None:
                tags[TAG_PARENT_RUN] = parent
            run_id = self.store.create_run(experiment_ids[experiment], tags)
            cwd = (self.root / str(run.spec.get("code_root", "."))).resolve()
            batch.append(
                Job(run=run, run_id=run_id, attempt=attempt, output_dir=output_dir, cwd=cwd)
            )
            created = self.store.get(run_id)
            record = to_record(created) if created is not None else None
            outcomes.append(Submitted(run.run_name, attempt, SubmitOutcome.CREATED, record))
        return batch, outcomes

    def _end_interrupted(self, previous: list[tuple[RunRecord, Any]]) -> None:
        """Earlier attempts left queued/running by a gone process: end them as KILLED."""
        for record, found in previous:
            if not record.in_progress:
                continue
            checked = self._liveness(record, apply_id_of(found))
            if checked.status == RunStatus.CANCELLED:
                self.store.set_tags(record.run_id, {TAG_ERROR: checked.error_tail})
                self.store.terminate(record.run_id, "KILLED")
