"""A third executor kind, test-only: runs execute in threads, records live in memory.

The proof that the executor seam is real: this file, one :func:`register` call and one line of
the contract suite (tests/backends/test_contract.py) add it; nothing in ``src/`` names it.
Runs whose ``compute.target`` starts with ``threads`` are placed on it; each run is "trained"
in a thread of its own (queued, running, then its outcome: ``params.behaviour`` ``fail``
fails, ``fail_once`` fails its first attempt), writes ``checkpoints/last.ckpt`` into its run
folder's record and a log the backend serves (:attr:`Capabilities.logs`). Like a remote
service, its runs go on without anyone waiting (``waits_locally=False``), and the store learns
that a run ended by polling: when it is waited for, or at the third listing after it ended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from himl_manifest.backends.base import (
    Backend,
    Capabilities,
    Progress,
    ProgressCallback,
    SubmitOutcome,
    Submitted,
)
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.backends.registry import ExecutorKind, OpenOptions
from himl_manifest.model import RunRecord, RunStatus
from himl_manifest.spec import RunSpec

KIND = "threads"


def outcome(run: RunSpec, attempt: int) -> RunStatus:
    behaviour = run.spec.get("params", {}).get("behaviour")
    failing = behaviour == "fail" or (behaviour == "fail_once" and attempt == 1)
    return RunStatus.FAILED if failing else RunStatus.COMPLETED


class ThreadBackend(MemoryBackend):
    """The store role of the memory backend; an executor of its own that runs in threads."""

    name = KIND
    capabilities = Capabilities(waits_locally=False, multi_node=False, logs=True)

    def __init__(self) -> None:
        super().__init__(outcome=outcome)
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._logs: dict[str, list[str]] = {}
        #: Runs whose thread has ended: run name -> (outcome, listings since).
        self._ended: dict[str, tuple[RunStatus, int]] = {}

    def list_runs(
        self, *, full: bool = True, history_of: Collection[str] | None = None
    ) -> list[RunRecord]:
        with self._lock:
            for name, (status, polls) in list(self._ended.items()):
                if polls >= 2:
                    self._publish(name)
                else:
                    self._ended[name] = (status, polls + 1)
            return super().list_runs(full=full, history_of=history_of)

    def submit(
        self, runs: Sequence[RunSpec], *, attempts: Mapping[str, int] | None = None
    ) -> list[Submitted]:
        with self._lock:
            accepted = super().submit(runs, attempts=attempts)
        by_name = {run.run_name: run for run in runs}
        for item in accepted:
            if item.outcome == SubmitOutcome.CREATED:
                thread = threading.Thread(target=self._train, args=(by_name[item.run_name],))
                self._threads[item.run_name] = thread
                thread.start()
        return accepted

    def wait(
        self, run_names: Collection[str], *, progress: ProgressCallback | None = None
    ) -> list[RunRecord]:
        for name in run_names:
            thread = self._threads.get(name)
            if thread is not None:
                thread.join()
            with self._lock:
                self._publish(name)
            if progress is not None:
                progress(Progress(name, self._latest(name).status, "ended"))
        wanted = set(run_names)
        with self._lock:
            return [r for r in self.records() if r.run_name in wanted]

    def job_log(self, record: RunRecord, *, follow: bool, out: TextIO) -> None:
        thread = self._threads.get(record.run_name)
        if follow and thread is not None:
            thread.join()
        out.write("".join(self._logs.get(f"{record.run_name}/{record.attempt}", [])))

    def _train(self, run: RunSpec) -> None:
        with self._lock:
            self._pending.pop(run.run_name, None)
            record = self._latest(run.run_name)
            self.add(replace(record, status=RunStatus.RUNNING))
        status = outcome(run, record.attempt)
        log = self._logs.setdefault(f"{run.run_name}/{record.attempt}", [])
        log.append(f"training {run.run_name} attempt {record.attempt} in a thread\n")
        log.append(f"{status}\n")
        with self._lock:
            self._ended[run.run_name] = (status, 0)

    def _publish(self, name: str) -> None:
        """What the store records once it learns that ``name``'s run ended (lock held)."""
        ended = self._ended.pop(name, None)
        if ended is not None:
            status = ended[0]
            error = "simulated failure" if status == RunStatus.FAILED else ""
            latest = self._latest(name)
            self.add(replace(latest, status=status, has_checkpoint=True, error_tail=error))


def _open(_root: Path, _options: OpenOptions) -> Backend:
    return ThreadBackend()


THREADS = ExecutorKind(KIND, claims=lambda target: target.startswith(KIND), open=_open)


def pair() -> tuple[Backend, Callable[[], Backend]]:
    """A backend and a second handle on the same store (what the contract suite takes)."""
    backend = ThreadBackend()
    return backend, lambda: backend
