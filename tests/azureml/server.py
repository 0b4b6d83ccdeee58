"""A loopback Azure ML workspace: the REST calls azure-ai-ml 1.35 makes for jobs, over HTTPS.

This is the one stand-in for Azure in the tests. It serves, with the service's shapes:

- ``PUT/GET .../workspaces/{ws}/jobs/{name}``: a JobBase resource (``id``, ``name``, ``type``,
  ``properties{jobType, status, experimentName, displayName, tags, properties, ...}``,
  ``systemData``). A PUT of an existing name answers the service's "already exists" error
  (400 UserError), unless it only flips ``isArchived`` (the SDK's archive fallback);
- ``GET .../jobs?tag=&properties=&listViewType=``: filtered on the server, paged with
  ``nextLink``/``$skipToken``;
- ``PUT .../environments/{name}/versions/{v}`` (the anonymous environment of every submit);
- ``POST .../jobs/{name}/cancel`` (202 + ``Location``) and the operation it points to;
- ``GET .../workspaces/{ws}`` (the workspace, with its ``discoveryUrl``), ``GET /discovery``,
  and the run-history ``PATCH /history/v1.0/.../experiments/{exp}/runs/{name}`` that
  ``jobs.update`` / ``jobs.archive`` send (they refuse a bearer token over plain http, hence TLS:
  a self-signed certificate made at test time with ``cryptography``).

Jobs move NotStarted -> Queued -> Running -> outcome, one step per ``GET`` of the job by name
(polling). The outcome is ``outcomes[name]``, else ``outcome(job)`` (a function of the stored
job), else Completed; ``on_finish(job, status)`` may add tags when a job ends (what the runner
inside a real job writes).

Faults are injected per test with :meth:`FakeWorkspace.fail`: an HTTP status (with
``Retry-After``), a slow answer, a dropped connection (before or after the request took effect),
and :meth:`FakeWorkspace.add_raw_job` puts a malformed job into listings. Every request is kept
in :attr:`FakeWorkspace.requests`; a request nobody serves is answered 404 and kept in
:attr:`FakeWorkspace.unknown`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RESOURCE_GROUP = "test-rg"
WORKSPACE = "test-ws"
ARM = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices"
WS_PATH = (ARM + "/workspaces/{ws}").format(sub=SUBSCRIPTION, rg=RESOURCE_GROUP, ws=WORKSPACE)
TERMINAL = ("Completed", "Failed", "Canceled", "NotResponding", "Paused")
STEPS = ("NotStarted", "Queued", "Running")
#: Fields of a job a PUT may change on an existing job (the service's own list).
UPDATABLE = ("description", "tags", "displayName", "properties", "isArchived")
ALREADY_EXISTS = (
    "A job with this name already exists. If you are trying to update an existing job, "
    "Only description, tags, displayName, properties, and isArchived can be updated."
)

_JOB = re.compile(r"^" + re.escape(WS_PATH) + r"/jobs/(?P<name>[^/]+)$", re.IGNORECASE)
_JOBS = re.compile(r"^" + re.escape(WS_PATH) + r"/jobs$", re.IGNORECASE)
_CANCEL = re.compile(r"^" + re.escape(WS_PATH) + r"/jobs/(?P<name>[^/]+)/cancel$", re.IGNORECASE)
_ENV = re.compile(
    r"^" + re.escape(WS_PATH) + r"/environments/(?P<name>[^/]+)/versions/(?P<v>[^/]+)$",
    re.IGNORECASE,
)
_WORKSPACE = re.compile(r"^" + re.escape(WS_PATH) + r"$", re.IGNORECASE)
_HISTORY = re.compile(
    r"^/history/v1\.0" + re.escape(WS_PATH) + r"/experiments/(?P<exp>[^/]+)/runs/(?P<name>[^/]+)$",
    re.IGNORECASE,
)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (certificate, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "himl-test-workspace")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "workspace-cert.pem", folder / "workspace-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@dataclass
class Fault:
    """One injected fault: requests matching ``method`` and ``path`` (a regex searched in the
    path) get it, ``times`` times (then the fault is spent)."""

    method: str
    path: str
    status: int = 500
    times: int = 1
    retry_after: float | None = None
    code: str = ""
    message: str = ""
    #: Sleep this long before answering (a slow service).
    delay_s: float = 0.0
    #: Close the connection without an answer; with ``after``, once the request took effect
    #: (a lost reply).
    drop: bool = False
    after: bool = False
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times > 0
            and self.method.upper() in (method.upper(), "*")
            and re.search(self.path, path) is not None
        )


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    authorization: str = ""


@dataclass
class FakeWorkspace:
    """The state of one fake workspace and the HTTPS server in front of it."""

    folder: Path
    page_size: int = 50
    outcome: Callable[[dict[str, Any]], str] | None = None
    outcomes: dict[str, str] = field(default_factory=dict)
    on_finish: Callable[[dict[str, Any], str], dict[str, str]] | None = None
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw_jobs: list[dict[str, Any]] = field(default_factory=list)
    environments: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    #: Job PUTs that created a job (the tests' "never a duplicate" counter).
    created: list[str] = field(default_factory=list)
    #: Polls (GETs by name) each job has had.
    polls: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.cert_file, key_file = make_certificate(self.folder)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # --- test controls -----------------------------------------------------------------------

    def fail(self, method: str, path: str, status: int = 500, **kwargs: Any) -> Fault:
        fault = Fault(method, path, status, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def add_raw_job(self, resource: dict[str, Any]) -> None:
        """Put a job resource into every listing as it is (e.g. a malformed one)."""
        with self.lock:
            self.raw_jobs.append(resource)

    def finish(self, name: str, status: str) -> None:
        """End job ``name`` with ``status`` now."""
        with self.lock:
            self._end(self.jobs[name], status)

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # --- the service ---------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        with self.lock:
            return self._route(method, path, query, body)

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: Any) -> Reply:
        if match := _JOB.match(path):
            name = match["name"]
            if method == "PUT":
                return self._put_job(name, body)
            if method == "GET":
                return self._get_job(name)
        if (match := _JOBS.match(path)) and method == "GET":
            return self._list_jobs(query)
        if (match := _CANCEL.match(path)) and method == "POST":
            return self._cancel(match["name"])
        if (match := _ENV.match(path)) and method == "PUT":
            return self._put_environment(match["name"], match["v"], body)
        if _WORKSPACE.match(path) and method == "GET":
            return Reply(200, self._workspace())
        if path == "/discovery" and method == "GET":
            return Reply(200, {"api": self.url, "history": self.url, "catalog": self.url})
        if path.startswith("/operations/") and method == "GET":
            return Reply(200, {"status": "Succeeded"})
        if (match := _HISTORY.match(path)) and method == "PATCH":
            return self._patch_run(match["name"], body)
        self.unknown.append(f"{method} {path}")
        return error(404, "NotFound", f"no route for {method} {path} in the fake workspace")

    def _resource(self, name: str, properties: dict[str, Any]) -> dict[str, Any]:
        now = dt.datetime.now(dt.timezone.utc).isoformat()
        return {
            "id": f"{WS_PATH}/jobs/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "properties": properties,
            "systemData": {
                "createdAt": now,
                "createdBy": "tester@example.com",
                "createdByType": "User",
                "lastModifiedAt": now,
            },
        }

    def _put_job(self, name: str, body: Any) -> Reply:
        properties = dict((body or {}).get("properties") or {})
        existing = self.jobs.get(name)
        if existing is not None:
            old = existing["properties"]
            archive = "isArchived" in properties and bool(properties["isArchived"]) != bool(
                old.get("isArchived")
            )
            if archive:
                old["isArchived"] = bool(properties["isArchived"])
                return Reply(200, self._view(existing))
            return error(400, "UserError", ALREADY_EXISTS)
        properties.setdefault("tags", {})
        properties.setdefault("properties", {})
        properties["status"] = "NotStarted"
        properties.setdefault("isArchived", False)
        properties.setdefault("experimentName", "Default")
        properties["services"] = {
            "Studio": {
                "jobServiceType": "Studio",
                "endpoint": f"https://ml.azure.com/runs/{name}?wsid={WS_PATH}",
            }
        }
        job = self._resource(name, properties)
        self.jobs[name] = job
        self.created.append(name)
        self.polls[name] = 0
        return Reply(201, self._view(job))

    def _view(self, job: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(job)

    def _get_job(self, name: str) -> Reply:
        job = self.jobs.get(name)
        if job is None:
            return error(404, "UserError", f"Job {name} not found.")
        self.polls[name] = self.polls.get(name, 0) + 1
        self._advance(job)
        return Reply(200, self._view(job))

    def _advance(self, job: dict[str, Any]) -> None:
        properties = job["properties"]
        status = properties["status"]
        if status in TERMINAL:
            return
        if status == "CancelRequested":
            self._end(job, "Canceled")
            return
        step = STEPS.index(status) if status in STEPS else 0
        if step + 1 < len(STEPS):
            properties["status"] = STEPS[step + 1]
            return
        name = job["name"]
        if name in self.outcomes:
            ended = self.outcomes[name]
        elif self.outcome is not None:
            ended = self.outcome(job)
        else:
            ended = "Completed"
        self._end(job, ended)

    def _end(self, job: dict[str, Any], status: str) -> None:
        job["properties"]["status"] = status
        if self.on_finish is not None:
            job["properties"]["tags"].update(self.on_finish(job, status))

    def _list_jobs(self, query: dict[str, list[str]]) -> Reply:
        view = (query.get("listViewType") or ["ActiveOnly"])[0]
        tag = (query.get("tag") or [""])[0]
        props = (query.get("properties") or [""])[0]
        # The continuation token is a position in the workspace's jobs, as a service's
        # cursor is: each page scans on from where the last one stopped (one pass in all).
        start = int((query.get("$skipToken") or ["0"])[0])
        jobs = [*self.jobs.values(), *self.raw_jobs]
        page: list[dict[str, Any]] = []
        position = start
        while position < len(jobs) and len(page) < self.page_size:
            job = jobs[position]
            position += 1
            if _visible(job, view) and _has(job, "tags", tag) and _has(job, "properties", props):
                page.append(job)
        reply: dict[str, Any] = {"value": [self._view(job) for job in page]}
        more = any(
            _visible(job, view) and _has(job, "tags", tag) and _has(job, "properties", props)
            for job in jobs[position:]
        )
        if more:
            params = {k: v[0] for k, v in query.items() if k != "$skipToken"}
            params["$skipToken"] = str(position)
            reply["nextLink"] = f"{self.url}{WS_PATH}/jobs?{urlencode(params)}"
        return Reply(200, reply)

    def _cancel(self, name: str) -> Reply:
        job = self.jobs.get(name)
        if job is None:
            return error(404, "UserError", f"Job {name} not found.")
        if job["properties"]["status"] not in TERMINAL:
            job["properties"]["status"] = "CancelRequested"
        location = f"{self.url}/operations/cancel-{name}"
        return Reply(202, None, {"Location": location})

    def _put_environment(self, name: str, version: str, body: Any) -> Reply:
        resource = {
            "id": f"{WS_PATH}/environments/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/environments/versions",
            "properties": dict((body or {}).get("properties") or {}),
        }
        key = f"{name}:{version}"
        created = key not in self.environments
        self.environments[key] = resource
        return Reply(201 if created else 200, resource)

    def _workspace(self) -> dict[str, Any]:
        return {
            "id": WS_PATH,
            "name": WORKSPACE,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": "westeurope",
            "properties": {
                "discoveryUrl": f"{self.url}/discovery",
                "mlFlowTrackingUri": f"azureml://westeurope.api.azureml.ms/mlflow/v1.0{WS_PATH}",
                "workspaceId": "11111111-2222-3333-4444-555555555555",
            },
        }

    def _patch_run(self, name: str, body: Any) -> Reply:
        job = self.jobs.get(name)
        if job is None:
            return error(404, "UserError", f"Run {name} not found.")
        body = body or {}
        properties = job["properties"]
        if body.get("tags"):
            properties["tags"].update({k: str(v) for k, v in body["tags"].items()})
        if body.get("properties"):
            for key, value in body["properties"].items():
                if key in properties["properties"] and properties["properties"][key] != value:
                    return error(400, "UserError", f"Property {key} is immutable.")
                properties["properties"][key] = str(value)
        if body.get("displayName") is not None:
            properties["displayName"] = body["displayName"]
        if body.get("description") is not None:
            properties["description"] = body["description"]
        if body.get("hidden") is not None:
            properties["isArchived"] = bool(body["hidden"])
        return Reply(
            200,
            {
                "runId": name,
                "displayName": properties.get("displayName"),
                "description": properties.get("description"),
                "status": properties["status"],
                "tags": properties["tags"],
                "properties": properties["properties"],
                "hidden": properties["isArchived"],
            },
        )


def _visible(job: dict[str, Any], view: str) -> bool:
    archived = bool((job.get("properties") or {}).get("isArchived"))
    if view.lower() == "all":
        return True
    return archived if view.lower() == "archivedonly" else not archived


def _has(job: dict[str, Any], where: str, wanted: str) -> bool:
    """The service's filters: ``tag=key`` / ``key=value``; ``properties=a,b=c``."""
    if not wanted:
        return True
    values = (job.get("properties") or {}).get(where) or {}
    for item in wanted.split(","):
        key, eq, value = item.partition("=")
        if key not in values or (eq and str(values[key]) != value):
            return False
    return True


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message, "details": []}})


def _handler(workspace: FakeWorkspace) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode(errors="replace")
            query = parse_qs(parts.query)
            request = Request(
                self.command, parts.path, query, body, self.headers.get("Authorization", "")
            )
            with workspace.lock:
                workspace.requests.append(request)
                fault = next(
                    (f for f in workspace.faults if f.matches(self.command, parts.path)), None
                )
                if fault is not None:
                    fault.times -= 1
                    fault.hits += 1
            if fault is not None and fault.delay_s:
                time.sleep(fault.delay_s)
            if fault is not None and not fault.after:
                if fault.drop:
                    self._drop()
                    return
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = f"{fault.retry_after:g}"
                reply = error(
                    fault.status,
                    fault.code or _CODES.get(fault.status, "ServiceError"),
                    fault.message or f"injected fault {fault.status}",
                )
                reply.headers.update(headers)
                self._send(reply)
                return
            reply = workspace.handle(self.command, parts.path, query, body)
            if fault is not None and fault.drop:
                self._drop()
                return
            self._send(reply)

        def _drop(self) -> None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        def _send(self, reply: Reply) -> None:
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-ms-request-id", "fake-request")
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _serve

    return Handler


_CODES = {
    401: "AuthenticationFailed",
    403: "AuthorizationFailed",
    404: "NotFound",
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


# --- clients of the fake workspace -------------------------------------------------------------


class FakeCredential:
    """The Azure stand-in for azure-identity: any token will do for the fake workspace."""

    def __init__(self) -> None:
        self.calls = 0

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        self.calls += 1
        return AccessToken("fake-token", int(time.time()) + 3600)


_ENV_LOCK = threading.Lock()


def client_of(workspace: FakeWorkspace, *, timeouts: Any = None, credential: Any = None) -> Any:
    """An ``MLClient`` aimed at ``workspace`` through :func:`...workspace.ml_client` (the
    service URL is read from AZUREML_DEV_URL_MFE when the client is made, and only then)."""
    import os

    from himl_manifest.backends.azureml.workspace import Workspace, ml_client

    with _ENV_LOCK:
        old = os.environ.get("AZUREML_DEV_URL_MFE")
        os.environ["AZUREML_DEV_URL_MFE"] = workspace.url
        try:
            return ml_client(
                Workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, source="test"),
                credential=credential or FakeCredential(),
                timeouts=timeouts,
                connection_verify=str(workspace.cert_file),
            )
        finally:
            if old is None:
                del os.environ["AZUREML_DEV_URL_MFE"]
            else:
                os.environ["AZUREML_DEV_URL_MFE"] = old


CODE_ID = WS_PATH + "/codes/himl-snapshot/versions/1"
CONDA_FILE = "name: himl-test\ndependencies:\n  - python=3.11\n  - pip\n"


def backend_of(workspace: FakeWorkspace, root: Path, **kwargs: Any) -> Any:
    """An :class:`AzureMLBackend` over ``workspace`` for the project at ``root`` (which gets an
    ``environment.yml`` when it has none): runs whose target is local go to ``cpu-cluster``,
    the code "upload" returns a code asset id, and waiting does not sleep."""
    from himl_manifest.backends.azureml.store import AzureMLBackend
    from himl_manifest.backends.azureml.workspace import Workspace

    conda = root / "environment.yml"
    if not conda.exists():
        conda.write_text(CONDA_FILE, encoding="utf-8")
    timeouts = kwargs.pop("timeouts", None)
    credential = kwargs.pop("credential", None)
    client = client_of(workspace, timeouts=timeouts, credential=credential)
    options: dict[str, Any] = {
        "code": lambda: CODE_ID,
        "default_compute": "cpu-cluster",
        "poll_s": 0.0,
        "workspace": Workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, source="test"),
        **kwargs,
    }
    return AzureMLBackend(client, root=root, **options)


def spec_of(job: dict[str, Any]) -> dict[str, Any]:
    """The run spec stored on a job of the fake workspace."""
    properties = job["properties"].get("properties") or {}
    count = int(properties.get("himl.spec.parts", "0") or 0)
    text = (
        "".join(properties.get(f"himl.spec.{i}", "") for i in range(count))
        if count
        else properties.get("himl.spec", "{}")
    )
    payload = json.loads(text)
    return dict(payload.get("spec") or {})


def runner_tags(job: dict[str, Any], status: str) -> dict[str, str]:
    """What the runner inside a job records when the job ends: its checkpoint files (it writes
    ``last.ckpt`` every epoch) and, on failure, the tail of its error."""
    tags = {"himl.checkpoints": "checkpoints/last.ckpt"}
    if status == "Failed":
        tags["himl.error_tail"] = "simulated failure"
    return tags


def behaviour_outcome(job: dict[str, Any]) -> str:
    """Failed for a run whose ``params.behaviour`` is ``fail``, else Completed."""
    failing = spec_of(job).get("params", {}).get("behaviour") == "fail"
    return "Failed" if failing else "Completed"
