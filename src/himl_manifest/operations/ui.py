"""`himl ui`: the MLflow UI on the project's run store.

A local store (SQLite, or an MLflow file store) is served by ``mlflow server`` on 127.0.0.1,
on a free port or the one asked for, started from the store's folder (its ``mlartifacts/``
beside it) and stopped with this process. A store that is already a server (``http://``,
``https://``) or a hosted service (``databricks``, ``azureml://``) is not served again: the
answer says where it is. The server needs MLflow's web pages, which come with the full
``mlflow`` package (the ``ui`` extra), not with ``mlflow-skinny``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from himl_manifest.errors import ConfigError, HimlError

#: The extra that installs the full ``mlflow`` package (its server's web pages).
UI_EXTRA = "ui"
INSTALL_HINT = f"pip install 'himl-manifest[{UI_EXTRA}]'"
HOST = "127.0.0.1"
#: How long the server may take to answer its first request.
READY_TIMEOUT_S = 120.0
#: Grace period between SIGTERM and SIGKILL when the server is stopped.
STOP_GRACE_S = 10.0


class UiUnavailable(ConfigError):
    """The full ``mlflow`` package (the MLflow UI's web pages) is not installed."""


@dataclass(frozen=True)
class UiPlan:
    """What `himl ui` does with a store: serve it (``command``), or only say where it is."""

    uri: str
    #: The store's own address, when it is a server or a hosted service already.
    elsewhere: str | None = None
    #: The folder the server starts in (the store's folder) and its command, when served here.
    cwd: Path | None = None
    command: tuple[str, ...] = ()
    url: str | None = None


def pages_installed() -> bool:
    """Whether the installed ``mlflow`` has its web UI (``mlflow-skinny`` has not); mlflow is
    not imported."""
    spec = importlib.util.find_spec("mlflow")
    if spec is None or not spec.submodule_search_locations:
        return False
    return any(
        (Path(folder) / "server" / "js" / "build" / "index.html").is_file()
        for folder in spec.submodule_search_locations
    )


def free_port() -> int:
    """A TCP port free on :data:`HOST` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def plan_ui(uri: str, root: Path, port: int | None = None) -> UiPlan:
    """How to show the store at ``uri`` (a relative SQLite URI is taken against ``root``)."""
    from himl_manifest.backends.local_uri import (
        absolute_uri,
        check_uri,
        is_initialized_sqlite,
        sqlite_path,
    )

    uri = absolute_uri(uri, root)
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https", "databricks", "azureml"):
        return UiPlan(uri, elsewhere=uri)
    check_uri(uri)
    db = sqlite_path(uri)
    if db is not None:
        if not is_initialized_sqlite(db):
            raise ConfigError(
                f"run store {uri}: no MLflow store there yet (`himl apply` creates it)"
            )
        folder = db.parent
    elif scheme == "file":
        folder = Path(uri[len("file://") :]).parent
    else:
        raise ConfigError(f"run store {uri}: `himl ui` serves SQLite and file stores only")
    if not pages_installed():
        raise UiUnavailable(
            "the MLflow UI is not installed (mlflow-skinny has no web pages): "
            f"{INSTALL_HINT}, or open the store with any MLflow UI: "
            f"mlflow server --backend-store-uri {uri}"
        )
    chosen = port or free_port()
    command = (
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--host",
        HOST,
        "--port",
        str(chosen),
        "--workers",
        "1",
    )
    return UiPlan(uri, cwd=folder, command=command, url=f"http://{HOST}:{chosen}")


class _Stopped(Exception):
    """SIGTERM reached `himl ui`: stop the server and exit."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped


def serve(plan: UiPlan, on_ready: Callable[[str], None]) -> int:
    """Run the server of ``plan`` until it exits, Ctrl-C or SIGTERM (which stop it, with
    everything it started); ``on_ready(url)`` once it answers. 0 when stopped, else an error
    when it exits by itself."""
    assert plan.url is not None and plan.command
    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    process = subprocess.Popen(
        plan.command,
        cwd=plan.cwd,
        stdin=subprocess.DEVNULL,
        stdout=sys.stderr.fileno() if _has_fileno(sys.stderr) else subprocess.DEVNULL,
        start_new_session=True,  # its workers are stopped with it
    )
    try:
        _wait_ready(process, plan.url)
        on_ready(plan.url)
        code = process.wait()
    except (KeyboardInterrupt, _Stopped):
        return 0
    finally:
        _stop(process)
        signal.signal(signal.SIGTERM, previous)
    raise HimlError(f"the MLflow server stopped by itself (exit code {code})")


def _has_fileno(stream: object) -> bool:
    try:
        return isinstance(stream.fileno(), int)  # type: ignore[attr-defined]
    except Exception:
        return False


def _wait_ready(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise HimlError(
                f"the MLflow server exited before it answered (exit code {process.returncode}); "
                "its output is above"
            )
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise HimlError(f"the MLflow server did not answer at {url} in {READY_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
