"""Inter-process locks of the local backend, and telling live processes from gone ones.

Two kinds of ``fcntl.flock`` locks live in the store's state folder (``.himl/`` beside the
SQLite file, else in the project root):

- ``apply.lock``: held by an apply while it checks for and creates run records (never while
  runs train). Two applies started at the same moment therefore create each run exactly once.
- ``applies/<apply id>.lock``: held by one apply for as long as it lives. The kernel drops it
  when the process dies (even by ``kill -9``), so "is the apply that queued this run still
  alive?" is answered by trying to take it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from himl_manifest.errors import StoreError

#: How long an apply waits for another to finish creating its records.
LOCK_TIMEOUT_S = 120.0


def this_host() -> str:
    return socket.gethostname()


@contextlib.contextmanager
def exclusive(path: Path, timeout_s: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if needed), waiting up to ``timeout_s``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() > deadline:
                    raise StoreError(
                        f"{path} is locked by another apply for over {timeout_s:.0f} s"
                    ) from exc
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class LivenessLock:
    """The lock an apply holds for its whole life, under ``<folder>/<apply id>.lock``."""

    def __init__(self, folder: Path, apply_id: str) -> None:
        self.path = folder / f"{apply_id}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def apply_alive(folder: Path, apply_id: str) -> bool:
    """Whether the apply ``apply_id`` (on this host) still holds its liveness lock."""
    path = folder / f"{apply_id}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False  # it finished and removed its lock
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # somebody holds it exclusively: the apply lives
    finally:
        os.close(fd)
    return False


def process_cmdline(pid: int) -> list[str] | None:
    """The command line of a live process, or None when it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return []
        return []  # alive, but no /proc: can't say more
    if not raw:
        return None  # a zombie: it has exited
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def is_runner_of(pid: int, output_dir: str | None) -> bool:
    """Whether ``pid`` is a live `himl run` process for the run whose folder is ``output_dir``."""
    args = process_cmdline(pid)
    if args is None:
        return False
    if not args:
        return True  # alive but unreadable: give it the benefit of the doubt
    return "run" in args and (output_dir is None or output_dir in args)
