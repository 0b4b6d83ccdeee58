"""Local worker processes: start `himl run` for each created record, a few at a time.

Each run is its own process (``python -m himl_manifest.cli.main run SPEC --output-dir DIR``)
with ``MLFLOW_RUN_ID`` naming the record created for it, so the runner logs into that record and
ends it (FINISHED or FAILED) itself. A process that exits non-zero without ending its record is
ended here as FAILED with the tail of its log (``runner.log``). Dependents start after their
upstream run completed, and are ended as KILLED (cancelled, so the next apply retries them) if
it did not.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from himl_manifest.backends.base import Progress, ProgressCallback
from himl_manifest.backends.local_store import Store
from himl_manifest.errors import StoreError
from himl_manifest.model import NEVER_STARTED, UNSUCCESSFUL, RunStatus
from himl_manifest.paths import TRACKING_URI_ENV
from himl_manifest.records import (
    LOG_CAPTURED_ENV,
    LOG_FILE,
    MLFLOW_ACTIVE,
    RUN_SPEC_FILE,
    TAG_ERROR,
    TAG_PID,
    TAG_STARTED_AT,
    attempt_marker,
    outputs_root,
    run_folder_name,
    status_from_mlflow,
)
from himl_manifest.spec import RunSpec

#: Builds the command of one run from its spec file and output folder.
JobCommand = Callable[[Path, Path], list[str]]
#: How much of the run's log becomes the error tail.
TAIL_LINES = 40
TAIL_CHARS = 4000
#: Grace period between SIGTERM and SIGKILL when an apply is interrupted.
TERM_GRACE_S = 10.0
#: The error tail of a run whose apply stopped it (Ctrl-C, SIGTERM, an error).
INTERRUPTED = "interrupted: the apply stopped"


def himl_run_command(spec_file: Path, output_dir: Path) -> list[str]:
    """The real job: `himl run` in a fresh interpreter."""
    return [
        sys.executable,
        "-m",
        "himl_manifest.cli.main",
        "run",
        str(spec_file),
        "--output-dir",
        str(output_dir),
    ]


def log_tail(log: Path, marker: str | None = None) -> str:
    """The last lines of ``log`` (after the last ``marker`` line, when given)."""
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    if marker and marker in text:
        text = text.rsplit(marker, 1)[1]
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-TAIL_LINES:])[-TAIL_CHARS:]


@dataclass
class Job:
    """One created record and, once started, its process."""

    run: RunSpec
    run_id: str
    attempt: int
    output_dir: Path
    cwd: Path
    upstream: set[str] = field(default_factory=set)
    process: subprocess.Popen[bytes] | None = None
    status: RunStatus = RunStatus.QUEUED
    started: float = 0.0

    @property
    def name(self) -> str:
        return self.run.run_name

    @property
    def marker(self) -> str:
        return attempt_marker(self.run.run_name, self.attempt)


@dataclass
class Scheduler:
    """Runs jobs, at most ``jobs`` at once, dependents after their upstream."""

    store: Store
    command: JobCommand
    progress: ProgressCallback
    jobs: int = 1
    poll_s: float = 0.2
    #: Upstream runs created by someone else: run name -> MLflow run id (polled in the store).
    external: dict[str, str] = field(default_factory=dict)

    def run(self, batch: Sequence[Job]) -> None:
        pending = list(batch)
        running: list[Job] = []
        by_name = {job.name: job for job in batch}
        try:
            while pending or running:
                for job in list(pending):
                    blocked = self._blocked(job, by_name)
                    if blocked == "wait" or (blocked is None and len(running) >= self.jobs):
                        continue
                    pending.remove(job)
                    if blocked is None:
                        self.check_store()
                        if self._start(job):
                            running.append(job)
                    else:
                        self._skip(job, blocked)
                for job in list(running):
                    if job.process is not None and job.process.poll() is not None:
                        running.remove(job)
                        self._finish(job)
                if pending or running:
                    time.sleep(self.poll_s)
        except BaseException:
            self._abort(pending, running)
            raise

    def _upstream_status(self, name: str, by_name: dict[str, Job]) -> RunStatus:
        if name in by_name:
            return by_name[name].status
        if name in self.external:
            found = self.store.get(self.external[name])
            return status_from_mlflow(found.info.status) if found else RunStatus.CANCELLED
        return (
            RunStatus.COMPLETED
        )  # not part of this apply: it exists already (the planner saw to it)

    def _blocked(self, job: Job, by_name: dict[str, Job]) -> str | None:
        """None: free to start; "wait": upstream still going; else: the upstream that failed."""
        for name in sorted(job.upstream):
            status = self._upstream_status(name, by_name)
            if status in UNSUCCESSFUL:
                return name
            if status != RunStatus.COMPLETED:
                return "wait"
        return None

    def check_store(self) -> None:
        """Refuse to go on when the store vanished or was replaced under this apply."""
        self.store.check_same()

    def _start(self, job: Job) -> bool:
        """Start the job's process; False (its record ended as never started, no attempt
        spent) when its run folder cannot be written."""
        try:
            job.output_dir.mkdir(parents=True, exist_ok=True)
            spec_file = job.output_dir / RUN_SPEC_FILE
            spec_file.write_text(job.run.to_json() + "\n", encoding="utf-8")
            with (job.output_dir / LOG_FILE).open("ab") as log:
                log.write(f"{job.marker}\n".encode())
        except OSError as exc:
            message = f"{NEVER_STARTED}cannot write its run folder {job.output_dir}: {exc}"
            self.store.set_tags(job.run_id, {TAG_ERROR: message})
            self.store.terminate(job.run_id, "KILLED")
            job.status = RunStatus.CANCELLED
            self.progress(Progress(job.name, RunStatus.CANCELLED, message))
            return False
        env = {
            **os.environ,
            "MLFLOW_RUN_ID": job.run_id,
            TRACKING_URI_ENV: self.store.uri,
            LOG_CAPTURED_ENV: "1",
        }
        with (job.output_dir / LOG_FILE).open("ab") as log:
            job.process = subprocess.Popen(
                self.command(spec_file, job.output_dir),
                cwd=job.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        job.status = RunStatus.RUNNING
        job.started = time.monotonic()
        started = {TAG_PID: str(job.process.pid), TAG_STARTED_AT: f"{time.time():.3f}"}
        self.store.set_tags(job.run_id, started)
        log_path = job.output_dir / LOG_FILE
        self.progress(
            Progress(job.name, RunStatus.RUNNING, f"pid {job.process.pid}, log {log_path}")
        )
        return True

    def _finish(self, job: Job) -> None:
        assert job.process is not None
        code = job.process.returncode
        found = self.store.get(job.run_id)
        mlflow_status = found.info.status if found else "FAILED"
        tags = dict(found.data.tags) if found else {}
        elapsed = time.monotonic() - job.started
        if mlflow_status in MLFLOW_ACTIVE:
            mlflow_status = "FINISHED" if code == 0 else "FAILED"
            if code != 0:
                tail = log_tail(job.output_dir / LOG_FILE, job.marker)
                message = tail or f"the job exited with code {code}"
                self.store.set_tags(job.run_id, {TAG_ERROR: message})
            self.store.terminate(job.run_id, mlflow_status)
        elif mlflow_status == "FAILED" and not tags.get(TAG_ERROR):
            tail = log_tail(job.output_dir / LOG_FILE, job.marker)
            self.store.set_tags(job.run_id, {TAG_ERROR: tail or f"exit code {code}"})
        job.status = status_from_mlflow(mlflow_status)
        if job.status == RunStatus.COMPLETED:
            self.progress(Progress(job.name, RunStatus.COMPLETED, f"in {elapsed:.1f} s"))
        else:
            found = self.store.get(job.run_id)
            tail = str(found.data.tags.get(TAG_ERROR, "")) if found else ""
            last = tail.strip().splitlines()[-1] if tail.strip() else f"exit code {code}"
            self.progress(Progress(job.name, job.status, last))

    def _skip(self, job: Job, upstream: str) -> None:
        message = f"not started: upstream run {upstream} did not complete"
        self.store.set_tags(job.run_id, {TAG_ERROR: message})
        self.store.terminate(job.run_id, "KILLED")
        job.status = RunStatus.CANCELLED
        self.progress(Progress(job.name, RunStatus.CANCELLED, message))

    def _abort(self, pending: list[Job], running: list[Job]) -> None:
        """The apply is stopping (Ctrl-C, SIGTERM, an error): stop its jobs, end their records."""
        for job in running:
            if job.process is not None and job.process.poll() is None:
                with contextlib.suppress(OSError):
                    job.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        for job in running:
            if job.process is None:
                continue
            try:
                job.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                job.process.kill()
                job.process.wait()
        for job in [*running, *pending]:
            with contextlib.suppress(Exception):
                found = self.store.get(job.run_id)
                # a job stopped by the signal may have ended its own record FAILED (Lightning
                # raises on SIGTERM): a run this apply stopped is cancelled, retried next apply
                # (or KILLED, with its own log tail): the apply's stopping is the reason given
                ended_by_signal = found is not None and found.info.status in ("FAILED", "KILLED")
                stopped = job in running and ended_by_signal
                if found is not None and (found.info.status in MLFLOW_ACTIVE or stopped):
                    self.store.set_tags(job.run_id, {TAG_ERROR: INTERRUPTED})
                    if found.info.status != "KILLED":
                        self.store.terminate(job.run_id, "KILLED")
                    job.status = RunStatus.CANCELLED


# --- run folders ---------------------------------------------------------------------------


def earlier_run_folders(root: Path) -> list[Path]:
    """Run folders under the outputs root (each holds the run spec its job was given)."""
    outputs = outputs_root(root)
    if not outputs.is_dir():
        return []
    return sorted(p for p in outputs.iterdir() if (p / RUN_SPEC_FILE).is_file())


def new_output_dir(root: Path, run_name: str) -> Path:
    return outputs_root(root) / run_folder_name(run_name)


def writable_folder(folder: Path) -> None:
    """Create ``folder`` (a run folder) if needed and prove it can be written (a real write:
    permission bits say nothing to root, and a path through a file fails only when used)."""
    probe = folder / f".himl-write-probe-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise StoreError(
            f"cannot write the run folder {folder}: {reason}; nothing was submitted (fix the "
            "folder, then apply again)"
        ) from exc
