"""The local backend: an MLflow tracking store is the state, local processes do the work.

- State: every managed run is an MLflow run tagged ``himl.managed = true`` (plus the tags of
  :mod:`.base`), in the store at the tracking URI (default ``sqlite:///<root>/mlflow.db``).
  :meth:`LocalBackend.list_runs` is one bulk read: three SQL queries straight from an SQLite
  store (:mod:`.local_sql`, no MLflow import), else one paginated ``search_runs`` over the
  managed experiments.
- Work: :meth:`LocalBackend.submit` creates the records under ``apply.lock``, then runs each as
  a `himl run` process (see :mod:`.local_jobs`), up to ``jobs`` at once.
- Interrupted runs: a record still queued or running whose process (on this host) is gone, or
  whose apply is gone before it started, is reported as cancelled, so the planner retries it.

Docs: ``docs/store.md``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from himl_manifest.backends.base import (
    ACTIVE,
    ARCHIVED,
    CANCELLED,
    COMPLETED,
    LIVE,
    QUEUED,
    SUPERSEDED,
    TAG_ERROR,
    TAG_SPEC,
    TAG_STATE,
    Progress,
    ProgressCallback,
    RunRecord,
)
from himl_manifest.backends.local_jobs import (
    Job,
    JobCommand,
    Scheduler,
    himl_run_command,
    upstream_runs,
)
from himl_manifest.backends.local_lock import (
    LivenessLock,
    apply_alive,
    exclusive,
    is_runner_of,
    this_host,
)
from himl_manifest.backends.local_store import (
    TAG_SPEC_PARTS,
    TAG_USER_PREFIX,
    Store,
    apply_id_of,
    cosmetic_tags,
    run_tags,
    spec_from_tags,
    spec_tags,
    sqlite_path,
    to_record,
)
from himl_manifest.errors import CheckpointError, ConfigError, StoreError
from himl_manifest.paths import project_root, tracking_uri
from himl_manifest.spec import COSMETIC_TOP, COSMETIC_TRACKING, RunSpec

STATE_DIR = ".himl"
LOCK_FILE = "apply.lock"
OUTPUTS_DIR = "outputs"
DEFAULT_CHECKPOINT = "checkpoints/last.ckpt"


def absolute_uri(uri: str, root: Path) -> str:
    """A relative ``sqlite:///x.db`` made absolute (against ``root``): jobs run elsewhere."""
    db = sqlite_path(uri)
    if db is None or db.is_absolute():
        return uri
    return f"sqlite:///{(root / db).resolve()}"


def new_output_dir(root: Path, run_name: str) -> Path:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    return root / OUTPUTS_DIR / f"{stamp}_{run_name}"


class LocalBackend:
    """MLflow tracking store + local worker processes."""

    name = "local"

    def __init__(
        self,
        tracking_uri_: str | None = None,
        root: Path | None = None,
        *,
        job_command: JobCommand | None = None,
        poll_s: float = 0.2,
    ) -> None:
        self.root = (root or project_root()).resolve()
        self.uri = absolute_uri(tracking_uri(tracking_uri_, self.root), self.root)
        self.store = Store(self.uri)
        db = sqlite_path(self.uri)
        self.state_dir = (db.parent if db else self.root) / STATE_DIR
        self.artifact_root = db.parent / "mlartifacts" if db else None
        self.host = this_host()
        self.job_command = job_command or himl_run_command
        self.poll_s = poll_s

    # -- reading ---------------------------------------------------------------------------

    def list_runs(self) -> list[RunRecord]:
        """Every managed run record (all attempts, all states), in one bulk read."""
        records = []
        for found in self.store.managed_runs():
            record = to_record(found)
            if record is not None:
                records.append(self._liveness(record, apply_id_of(found)))
        records.sort(key=lambda r: (r.experiment, r.seed, r.run_name, r.attempt))
        return records

    def _liveness(self, record: RunRecord, apply_id: str | None) -> RunRecord:
        """Report a queued/running record whose process (or apply) is gone as cancelled."""
        if record.status not in ACTIVE or record.host != self.host:
            return record
        if record.pid is not None:
            if is_runner_of(record.pid, record.output_dir):
                return record
            message = f"interrupted: process {record.pid} is gone"
        elif apply_id and apply_alive(self.state_dir / "applies", apply_id):
            return record
        else:
            message = "interrupted: the apply that queued it is gone"
        return replace(record, status=CANCELLED, error_tail=message)

    def _records(self, run_name: str) -> list[tuple[RunRecord, Any]]:
        out = []
        for found in self.store.by_run_name(run_name):
            record = to_record(found)
            if record is not None:
                out.append((record, found))
        return out

    # -- submitting ------------------------------------------------------------------------

    def submit(
        self,
        runs: Sequence[RunSpec],
        *,
        attempts: dict[str, int] | None = None,
        jobs: int = 1,
        progress: ProgressCallback | None = None,
    ) -> list[RunRecord]:
        """Create the records (under the apply lock), then run them; wait for all to end."""
        emit: ProgressCallback = progress or (lambda _: None)
        apply_id = uuid.uuid4().hex[:16]
        liveness = LivenessLock(self.state_dir / "applies", apply_id)
        liveness.acquire()
        try:
            with exclusive(self.state_dir / LOCK_FILE):
                batch, external = self._create(runs, attempts or {}, apply_id, emit)
            for job in batch:
                emit(Progress(job.name, QUEUED, f"attempt {job.attempt}"))
            scheduler = Scheduler(
                store=self.store,
                command=self.job_command,
                progress=emit,
                jobs=max(1, jobs),
                poll_s=self.poll_s,
                external=external,
            )
            scheduler.run(batch)
        finally:
            liveness.release()
        names = {run.run_name for run in runs}
        return [r for r in self.list_runs() if r.run_name in names]

    def _create(
        self,
        runs: Sequence[RunSpec],
        attempts: dict[str, int],
        apply_id: str,
        emit: ProgressCallback,
    ) -> tuple[list[Job], dict[str, str]]:
        """Check and create every record; returns the jobs to run and the runs others made."""
        existing: dict[str, list[tuple[RunRecord, Any]]] = {}
        for found in self.store.managed_runs():
            record = to_record(found)
            if record is not None:
                existing.setdefault(record.run_name, []).append((record, found))
        experiment_ids: dict[str, str] = {}
        batch: list[Job] = []
        external: dict[str, str] = {}
        for run in runs:
            attempt = attempts.get(run.run_name, 1)
            previous = existing.get(run.run_name, [])
            done = [r for r, _ in previous if r.attempt >= attempt]
            if done:
                if any(r.spec_hash != run.spec_hash for r in done):
                    raise StoreError(
                        f"run name collision: {run.run_name} exists with another spec hash"
                    )
                latest = max(done, key=lambda r: r.attempt)
                external[run.run_name] = latest.run_id
                emit(Progress(run.run_name, latest.status, "exists already: not created again"))
                continue
            self._end_interrupted(previous)
            dirs = [r.output_dir for r, _ in sorted(previous, key=lambda p: p[0].attempt)]
            output_dir = Path(dirs[-1]) if dirs and dirs[-1] else None
            output_dir = output_dir or new_output_dir(self.root, run.run_name)
            experiment = str(run.spec.get("tracking", {}).get("experiment") or run.experiment)
            if experiment not in experiment_ids:
                experiment_ids[experiment] = self.store.experiment_id(
                    experiment, self.artifact_root
                )
            tags = run_tags(run, attempt, output_dir, self.host, apply_id)
            run_id = self.store.create_run(experiment_ids[experiment], tags)
            cwd = (self.root / str(run.spec.get("code_root", "."))).resolve()
            batch.append(
                Job(run=run, run_id=run_id, attempt=attempt, output_dir=output_dir, cwd=cwd)
            )
        names = {job.name for job in batch} | set(external)
        for job in batch:
            job.upstream = upstream_runs(job.run) & names
        return batch, external

    def _end_interrupted(self, previous: list[tuple[RunRecord, Any]]) -> None:
        """Earlier attempts left queued/running by a gone process: end them as KILLED."""
        for record, found in previous:
            if record.status not in ACTIVE:
                continue
            checked = self._liveness(record, apply_id_of(found))
            if checked.status == CANCELLED:
                self.store.set_tags(record.run_id, {TAG_ERROR: checked.error_tail})
                self.store.terminate(record.run_id, "KILLED")

    # -- metadata --------------------------------------------------------------------------

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        """Copy description, tags and display name of ``run`` onto every attempt of the run."""
        found_any = False
        for _record, found in self._records(run_name):
            found_any = True
            old_tags: dict[str, str] = dict(found.data.tags)
            stored = spec_from_tags(old_tags)
            if stored is None:
                continue
            spec = dict(stored.spec)
            for key in COSMETIC_TOP:
                if key in run.spec:
                    spec[key] = run.spec[key]
                else:
                    spec.pop(key, None)
            tracking = dict(spec.get("tracking", {}))
            for key in COSMETIC_TRACKING:
                if key in run.spec.get("tracking", {}):
                    tracking[key] = run.spec["tracking"][key]
                else:
                    tracking.pop(key, None)
            spec["tracking"] = tracking
            updated = replace(stored, spec=spec)
            new_tags = {**spec_tags(updated), **cosmetic_tags(updated)}
            stale = [
                key
                for key in old_tags
                if (key.startswith(TAG_USER_PREFIX) or key.startswith(f"{TAG_SPEC}."))
                and key not in new_tags
            ]
            if TAG_SPEC_PARTS in old_tags and TAG_SPEC_PARTS not in new_tags:
                stale.append(TAG_SPEC_PARTS)
            if TAG_SPEC in old_tags and TAG_SPEC not in new_tags:
                stale.append(TAG_SPEC)
            self.store.set_tags(found.info.run_id, new_tags)
            self.store.delete_tags(found.info.run_id, stale)
        if not found_any:
            raise StoreError(f"no run named {run_name} in {self.uri}")

    def set_state(self, run_name: str, state: str) -> None:
        """Mark every attempt of ``run_name`` superseded, archived (or active again)."""
        if state not in (LIVE, SUPERSEDED, ARCHIVED):
            raise ConfigError(f"unknown run state {state!r}")
        records = self._records(run_name)
        if not records:
            raise StoreError(f"no run named {run_name} in {self.uri}")
        for record, _ in records:
            self.store.set_tags(record.run_id, {TAG_STATE: state})

    # -- checkpoints -----------------------------------------------------------------------

    def find_run(self, reference: str) -> RunRecord | None:
        """The newest attempt of a run name (a completed one first), or the run with that id."""
        records = [record for record, _ in self._records(reference)]
        if records:
            completed = [r for r in records if r.status == COMPLETED]
            return max(completed or records, key=lambda r: r.attempt)
        found = self.store.get(reference) if reference.isalnum() else None
        return to_record(found) if found is not None else None

    def resolve_checkpoint(self, reference: str) -> str:
        """``<run name or id>[:<dir/>file.ckpt]`` -> the file's path under the run's folder."""
        name, _, file = reference.partition(":")
        record = self.find_run(name)
        if record is None:
            raise CheckpointError(f"checkpoint {reference!r}: no run {name!r} in {self.uri}")
        if not record.output_dir:
            raise CheckpointError(f"checkpoint {reference!r}: run {name} has no output folder")
        folder = Path(record.output_dir)
        file = file.strip("/")
        if file.startswith(f"{OUTPUTS_DIR}/"):
            file = file[len(OUTPUTS_DIR) + 1 :]
        if not file:
            candidates = [folder / DEFAULT_CHECKPOINT]
        elif "/" in file:
            candidates = [folder / file]
        else:
            candidates = [folder / "checkpoints" / file, folder / file]
        for candidate in candidates:
            if candidate.is_file():
                return str(candidate)
        raise CheckpointError(
            f"checkpoint {reference!r}: {candidates[0]} does not exist (run {record.run_name}, "
            f"status {record.status})"
        )
