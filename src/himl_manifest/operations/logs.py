"""Following runs: `himl logs` (a run's log) and what `himl apply --wait` waits for elsewhere.

A run's log is its newest attempt's:

- **here** (the local backend): the run folder's ``runner.log``, from the line the local
  executor writes when it starts that attempt (``===== himl: attempt N of <run> =====``; a retry
  reuses the run folder, so earlier attempts' lines come before it). ``follow`` tails the file
  until the run ends, polling the run store for its status;
- **elsewhere**: fetched by the backend that holds the run (:meth:`~.base.Backend.job_log`, for
  a backend with the ``logs`` capability; Azure ML: ``jobs.stream`` to follow, ``jobs.download``
  of an ended job's logs otherwise).

No printing here apart from the log itself, written to the stream the caller gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from himl_manifest.backends.base import Backend
from himl_manifest.errors import HimlError, StoreError
from himl_manifest.model import RunRecord
from himl_manifest.operations.runs import find_records
from himl_manifest.records import LOG_FILE, attempt_marker

#: Seconds between reads of a local log (and of the store's status) while following it.
POLL_S = 1.0


def newest_attempt(backend: Backend, reference: str) -> RunRecord:
    """The newest attempt of the run named (or with the id) ``reference``."""
    found = find_records(backend.list_runs(), reference)
    if not found:
        raise HimlError(f"no managed run named {reference!r} (see `himl runs --all`)")
    return found[-1]


def is_local(record: RunRecord) -> bool:
    """Whether the record's run folder is a folder of this machine (not a URI)."""
    return bool(record.output_dir) and "://" not in str(record.output_dir)


def marker(record: RunRecord) -> str:
    """The line the local executor writes into ``runner.log`` when it starts an attempt
    (:attr:`himl_manifest.backends.local_jobs.Job.marker`)."""
    return attempt_marker(record.run_name, record.attempt)


def write_log(
    backend: Backend,
    reference: str,
    out: TextIO,
    *,
    follow: bool = False,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
    note: Callable[[str], None] = lambda _: None,
) -> RunRecord:
    """Write the log of run ``reference`` (its newest attempt) to ``out``; with ``follow``,
    until the run ends. Returns the record as it stood last. ``note`` gets remarks for a person
    (where the log is, that the attempt has not started yet)."""
    record = newest_attempt(backend, reference)
    if is_local(record):
        return _local_log(
            backend, record, out, follow=follow, poll_s=poll_s, sleep=sleep, note=note
        )
    if record.url:
        note(f"{record.run_name} attempt {record.attempt}: job {record.run_id}, {record.url}")
    try:
        backend.job_log(record, follow=follow, out=out)
    except StoreError as exc:
        if not record.url or record.url in str(exc):
            raise
        raise StoreError(f"{exc}\nThe job's logs are also in the studio: {record.url}") from exc
    if follow:  # the stream ended with the job: its final status
        record = newest_attempt(backend, record.run_id)
    return record


def _local_log(
    backend: Backend,
    record: RunRecord,
    out: TextIO,
    *,
    follow: bool,
    poll_s: float,
    sleep: Callable[[float], None],
    note: Callable[[str], None],
) -> RunRecord:
    path = Path(str(record.output_dir)) / LOG_FILE
    try:
        shown = path.relative_to(Path.cwd())
    except ValueError:
        shown = path
    note(f"{record.run_name} attempt {record.attempt} ({record.status}): {shown}")
    reader = _Tail(path, marker(record))
    current = record
    while True:
        reader.copy_to(out)
        if not follow or not current.in_progress:
            break
        sleep(poll_s)
        current = _refresh(backend, current)
        if not current.in_progress:  # the record ends before the process's last lines
            sleep(poll_s)
    reader.copy_to(out)
    if not reader.started:
        if current.in_progress:
            note(f"attempt {current.attempt} has not started yet: no log so far")
        elif not path.is_file():
            raise StoreError(f"run {current.run_name}: no log file at {path}")
        else:  # a log written by something else than this tool's executor: all of it
            reader.started, reader.offset = True, 0
            reader.copy_to(out)
    reader.flush(out)
    return current


def _refresh(backend: Backend, record: RunRecord) -> RunRecord:
    """The same attempt as the store has it now."""
    for found in backend.list_runs(history_of=[record.run_name]):
        if found.run_name == record.run_name and found.attempt == record.attempt:
            return found
    return record


class _Tail:
    """Copies what a growing file gained since the last copy, from its last ``start`` line."""

    def __init__(self, path: Path, start: str) -> None:
        self.path = path
        self.start = start.encode()
        self.offset = 0
        self.started = False
        self._pending = b""

    def copy_to(self, out: TextIO) -> None:
        try:
            with self.path.open("rb") as handle:
                if not self.started:
                    data = handle.read()
                    at = data.rfind(self.start)
                    if at < 0:
                        return
                    self.started = True
                    self.offset = at
                handle.seek(self.offset)
                chunk = handle.read()
        except OSError:
            return
        self.offset += len(chunk)
        data = self._pending + chunk
        cut = data.rfind(b"\n") + 1  # whole lines only (the rest once it is complete)
        text, self._pending = data[:cut], data[cut:]
        if text:
            out.write(text.decode("utf-8", errors="replace"))
            out.flush()

    def flush(self, out: TextIO) -> None:
        if self._pending:
            out.write(self._pending.decode("utf-8", errors="replace") + "\n")
            self._pending = b""
