"""Azurite, Microsoft's Azure Storage emulator, as the blob storage of the Azure ML tests.

:class:`Azurite` runs ``tests/azurite/node_modules/.bin/azurite-blob`` (npm package ``azurite``,
pinned in ``tests/azurite/package.json``; ``make setup`` or ``npm ci --prefix tests/azurite``
installs it) on a free loopback port with its data in a temporary folder::

    azurite-blob --blobHost 127.0.0.1 --blobPort <port> --location <tmp> --silent --loose
                 --skipApiVersionCheck --disableTelemetry

The account is Azurite's well-known development account (``devstoreaccount1`` and its published
key), addressed IP-style: ``http://127.0.0.1:<port>/devstoreaccount1``. Azurite checks SAS
signatures and permissions as Azure Storage does (a wrong key, another container or a missing
permission answers 403 ``AuthorizationFailure`` / ``AuthorizationPermissionMismatch``).

No orphan is left behind: Azurite runs in its own session (process group); :meth:`Azurite.stop`
terminates the group, then kills it; an ``atexit`` hook stops it when the interpreter exits;
and a watchdog preloaded into node (``NODE_OPTIONS=--require``) ends Azurite as soon as its
stdin pipe closes, which happens when the Python process that started it dies by any means,
``SIGKILL`` included.

:class:`BlobProxy` is a small HTTP forwarder in front of an Azurite: it records every blob
request and can answer some with an injected status (a 503 ``ServerBusy``) or drop them; the
loopback workspace (server.py) hands out SAS URIs through it.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from azure.storage.blob import ExponentialRetry

REPO_ROOT = Path(__file__).resolve().parents[3]
PACKAGE_DIR = REPO_ROOT / "tests" / "azurite"
BINARY = PACKAGE_DIR / "node_modules" / ".bin" / "azurite-blob"
INSTALL_HINT = "run `make setup` (or `npm ci --prefix tests/azurite`; it needs node 20 and npm)"
#: Azurite's well-known development account (published in Azurite's README).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
#: A well-formed key that is not the account's: SAS URIs signed with it get 403.
WRONG_KEY = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3Jvbmc="
#: Ends node when its stdin (a pipe from the Python process that started it) closes.
WATCHDOG_JS = """\
process.stdin.on("end", () => process.exit(0));
process.stdin.on("error", () => process.exit(0));
process.stdin.resume();
"""


class AzuriteNotInstalled(RuntimeError):
    """Azurite's npm package is missing: the tests that need blob storage cannot run."""


def free_port() -> int:
    """A loopback TCP port nobody listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    """Whether an HTTP server answers on ``port`` (any status will do)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=0.5)
    try:
        connection.request("GET", f"/{ACCOUNT_NAME}?comp=list")
        connection.getresponse().read()
        return True
    except OSError:
        return False
    finally:
        connection.close()


class Azurite:
    """One Azurite blob service on a free loopback port (see the module's docstring)."""

    account_name = ACCOUNT_NAME
    account_key = ACCOUNT_KEY

    def __init__(self, location: Path | None = None, *, start_timeout_s: float = 30.0) -> None:
        self._own_location = location is None
        self.location = Path(location or tempfile.mkdtemp(prefix="himl-azurite-"))
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_file = self.location / "azurite.log"
        self._service: Any = None

    # --- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def check_installed() -> None:
        if shutil.which("node") is None:
            raise AzuriteNotInstalled(f"Azurite needs node (not found on PATH): {INSTALL_HINT}")
        if not BINARY.exists():
            raise AzuriteNotInstalled(
                f"Azurite is not installed ({BINARY.relative_to(REPO_ROOT)} is missing): "
                f"{INSTALL_HINT}"
            )

    def start(self) -> Azurite:
        self.check_installed()
        data = self.location / "data"
        data.mkdir(parents=True, exist_ok=True)
        watchdog = self.location / "watchdog.js"
        watchdog.write_text(WATCHDOG_JS, encoding="utf-8")
        env = dict(os.environ)
        env["NODE_OPTIONS"] = f'{env.get("NODE_OPTIONS", "")} --require="{watchdog}"'.strip()
        for attempt in range(3):
            self.port = free_port()
            with self.log_file.open("ab") as log:
                self.process = subprocess.Popen(
                    [
                        str(BINARY),
                        "--blobHost",
                        "127.0.0.1",
                        "--blobPort",
                        str(self.port),
                        "--location",
                        str(data),
                        "--silent",
                        "--loose",
                        "--skipApiVersionCheck",
                        "--disableTelemetry",
                    ],
                    stdin=subprocess.PIPE,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            atexit.register(self.stop)
            if self._wait_ready():
                return self
            self.stop(remove=False)
            if attempt == 2:
                break
        raise RuntimeError(f"Azurite did not start; its log ({self.log_file}):\n{self.log()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # e.g. the port was taken in between: try another one
            if _answers(self.port):
                return True
            time.sleep(0.05)
        return False

    def log(self) -> str:
        try:
            return self.log_file.read_text(encoding="utf-8", errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, remove: bool = True) -> None:
        """Stop Azurite: close its stdin (the watchdog exits at once, open connections or
        not), then SIGTERM its process group, then SIGKILL."""
        process, self.process = self.process, None
        if process is not None:
            if process.stdin is not None:
                with contextlib.suppress(OSError):
                    process.stdin.close()
            for sig, wait_s in ((None, 2.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
                if sig is not None:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    continue
        if self._service is not None:
            with contextlib.suppress(Exception):
                self._service.close()
        self._service = None
        if remove and self._own_location:
            shutil.rmtree(self.location, ignore_errors=True)

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # --- the account -----------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The account's blob endpoint: ``http://127.0.0.1:<port>/devstoreaccount1``."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.url};"
        )

    def service(self) -> Any:
        """An azure-storage-blob ``BlobServiceClient`` on the account (shared key)."""
        if self._service is None:
            from azure.storage.blob import BlobServiceClient

            self._service = BlobServiceClient(
                account_url=self.url,
                credential={"account_name": ACCOUNT_NAME, "account_key": ACCOUNT_KEY},
                retry_total=0,
            )
        return self._service

    def create_container(self, name: str) -> str:
        self.service().create_container(name)
        return name

    def containers(self) -> list[str]:
        return sorted(c.name for c in self.service().list_containers())

    def container_url(self, container: str) -> str:
        return f"{self.url}/{container}"

    def container_sas_url(
        self,
        container: str,
        permissions: str = "racwdl",
        *,
        expiry: dt.timedelta = dt.timedelta(hours=1),
        account_key: str = ACCOUNT_KEY,
        base_url: str | None = None,
    ) -> str:
        """A container SAS URI (azure-storage-blob's ``generate_container_sas``) with
        ``permissions`` (letters of ``racwdl``...). ``account_key`` other than the account's
        (e.g. :data:`WRONG_KEY`) gives a SAS that Azurite refuses; ``base_url`` replaces the
        account URL in front of the container (a proxy, a dead endpoint): the signature covers
        the account and container names, not the host."""
        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        token = generate_container_sas(
            ACCOUNT_NAME,
            container,
            account_key=account_key,
            permission=ContainerSasPermissions.from_string(permissions),
            expiry=dt.datetime.now(dt.timezone.utc) + expiry,
            start=dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5),
        )
        return f"{base_url or self.url}/{container}?{token}"

    def blobs(self, container: str, prefix: str | None = None) -> dict[str, bytes]:
        """Every blob of ``container`` (under ``prefix``): name -> content."""
        client = self.service().get_container_client(container)
        return {
            blob.name: client.download_blob(blob.name).readall()
            for blob in client.list_blobs(name_starts_with=prefix)
        }

    def blob_names(self, container: str, prefix: str | None = None) -> list[str]:
        client = self.service().get_container_client(container)
        return sorted(blob.name for blob in client.list_blobs(name_starts_with=prefix))

    def metadata(self, container: str, blob: str) -> dict[str, str]:
        client = self.service().get_blob_client(container, blob)
        return dict(client.get_blob_properties().metadata or {})

    def container_exists(self, container: str) -> bool:
        return bool(self.service().get_container_client(container).exists())


# --- a recording, fault-injecting proxy in front of Azurite --------------------------------------


@dataclass
class BlobRequest:
    """One request to blob storage, as the proxy saw it."""

    method: str
    container: str
    blob: str
    query: dict[str, list[str]]
    status: int = 0

    @property
    def comp(self) -> str:
        return (self.query.get("comp") or [""])[0]


@dataclass
class BlobFault:
    """Requests matching ``method`` and ``path`` (a regex searched in ``/<container>/<blob>``)
    get ``status`` (with a storage error body and ``x-ms-error-code``), or, with ``drop``, a
    closed connection; ``times`` times (None: every time)."""

    method: str
    path: str
    status: int = 503
    times: int | None = 1
    code: str = ""
    drop: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            (self.times is None or self.times > 0)
            and self.method.upper() in (method.upper(), "*")
            and re.search(self.path, path) is not None
        )


_STORAGE_CODES = {500: "InternalError", 503: "ServerBusy", 403: "AuthorizationFailure"}
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


class BlobProxy:
    """An HTTP forwarder to ``target`` (an :class:`Azurite`), on its own loopback port."""

    def __init__(self, target: Azurite) -> None:
        self.target = target
        self.lock = threading.Lock()
        self.requests: list[BlobRequest] = []
        self.faults: list[BlobFault] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        """The account's URL through the proxy."""
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    def fail(self, method: str, path: str, status: int = 503, **kwargs: Any) -> BlobFault:
        fault = BlobFault(method, path, status, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def take_fault(self, method: str, path: str) -> BlobFault | None:
        with self.lock:
            fault = next((f for f in self.faults if f.matches(method, path)), None)
            if fault is not None:
                fault.hits += 1
                if fault.times is not None:
                    fault.times -= 1
            return fault


def read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """A request's body, ``Content-Length`` or chunked."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _proxy_handler(proxy: BlobProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            segments = unquote(parts.path).lstrip("/").split("/", 2)
            container = segments[1] if len(segments) > 1 else ""
            blob = segments[2] if len(segments) > 2 else ""
            record = BlobRequest(self.command, container, blob, parse_qs(parts.query))
            with proxy.lock:
                proxy.requests.append(record)
            body = read_body(self)
            fault = proxy.take_fault(self.command, f"/{container}/{blob}")
            if fault is not None and fault.drop:
                record.status = -1
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault is not None:
                code = fault.code or _STORAGE_CODES.get(fault.status, "InternalError")
                data = (
                    '<?xml version="1.0" encoding="utf-8"?><Error>'
                    f"<Code>{code}</Code><Message>injected fault {fault.status}</Message></Error>"
                ).encode()
                record.status = fault.status
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("x-ms-error-code", code)
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Host"] = f"127.0.0.1:{proxy.target.port}"
            upstream = http.client.HTTPConnection("127.0.0.1", proxy.target.port, timeout=30)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            record.status = response.status
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            length_header = response.getheader("Content-Length")
            if self.command == "HEAD":
                self.send_header("Content-Length", length_header or "0")
            else:
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return Handler


class FastRetry(ExponentialRetry):  # type: ignore[misc]
    """azure-storage-blob's ExponentialRetry with no back-off and one retry: for tests that
    make blob storage fail (the default waits 15, 18 and 24 s, give or take 3, between tries)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("initial_backoff", 0)
        kwargs.setdefault("increment_base", 0)
        kwargs.setdefault("random_jitter_range", 0)
        kwargs.setdefault("retry_total", 1)
        super().__init__(**kwargs)
