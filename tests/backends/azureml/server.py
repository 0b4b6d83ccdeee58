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
  a self-signed certificate made at test time with ``cryptography``), and
  ``DELETE .../runs/{name}/tags`` (a JSON list of tag keys);
- code assets, as ``Code(path=folder)`` / ``command(code=folder)`` upload them:
  ``GET .../codes/{name}/versions?hash=&hashVersion=`` (versions with that content hash under
  any name: the SDK names each anonymous snapshot with a fresh uuid), ``GET``/``PUT
  .../codes/{name}/versions/{v}`` and ``POST .../startPendingUpload`` (a new container of
  :attr:`FakeWorkspace.storage`, an Azurite, per call, with a SAS through
  :attr:`FakeWorkspace.blob_proxy`). A PUT whose ``codeUri`` has no blobs is refused, a PUT that
  changes an existing version's path answers "Asset paths cannot be updated.";
- data assets (``GET .../data/{name}``, ``.../data/{name}/versions[/{v}]`` with ``$orderBy``,
  ``$top``), datastores (``workspaceblobstore`` by default), computes (``cpu-cluster`` and
  ``gpu-cluster`` by default) and ``.../locations/{loc}/vmSizes``;
- MLflow on the workspace, as azureml-mlflow calls it on the workspace's tracking URI
  (``mlFlowTrackingUri``: ``azureml://westeurope.api.azureml.ms/mlflow/v1.0/<workspace>``,
  which azure-ai-ml hands out as ``.../mlflow/v2.0/...`` and azureml-mlflow calls as
  ``https://westeurope.api.azureml.ms/mlflow/v2.0/<workspace>/api/2.0/mlflow/...`` with a bearer
  token): ``GET runs/get``, ``GET metrics/get-history`` and ``POST runs/log-batch`` over the jobs
  (a job's name is its MLflow run id), in MLflow's shapes; metrics come from
  :meth:`FakeWorkspace.log_metric` or ``log-batch``;
- with blob storage only (without, they answer 404 as ever): run history's
  ``GET /history/v1.0/.../runs/{name}/details`` (what ``jobs.stream`` polls: status, error,
  ``logFiles`` as SAS URLs of the blobs) and ``POST /history/v1.0/.../rundata`` (what
  ``jobs.download`` asks first), the artifact store ``workspaceartifactstore`` (registered on
  first use; a job's artifacts under ``ExperimentRun/dcid.<job>/``, given with
  :meth:`FakeWorkspace.add_log`) and ``POST .../datastores/{name}/listSecrets`` (the account key).

Clients that build their own connections (azureml-mlflow's store; the blob client of
``jobs.download``, which builds ``https://<account>.blob.core.windows.net`` from a datastore's
account name) reach the workspace and Azurite through an HTTPS proxy, with the environment of
:meth:`FakeWorkspace.client_environment` (``HTTPS_PROXY``, ``REQUESTS_CA_BUNDLE``, an ``az`` for
azure-identity): :class:`AzureProxy`.

A new job's PUT is checked as the service checks it: its compute, environment and code exist,
so do the data assets and datastores its inputs and outputs name; and the run limits (50 tags
and 50 properties, keys of 100 characters, values of 1,000; name, display name and experiment
name of 256, description of 5,000) hold, on the PUT and on the merged result of a run-history
PATCH. Each refusal is a 400 UserError naming what is missing or the limit broken.

Jobs move NotStarted -> Queued -> Running -> outcome, one step per ``GET`` of the job by name
or of its run details (polling), Running for :attr:`FakeWorkspace.running_polls` polls. The
outcome is ``outcomes[name]``, else ``outcome(job)`` (a function of the stored
job), else Completed; ``on_finish(job, status)`` may add tags when a job ends (what the runner
inside a real job writes).

Faults are injected per test with :meth:`FakeWorkspace.fail`: an HTTP status (with
``Retry-After``), a slow answer, a dropped connection (before or after the request took effect),
and :meth:`FakeWorkspace.add_raw_job` puts a malformed job into listings; blob storage fails
with :meth:`FakeWorkspace.fail_storage` (a SAS that Azurite refuses, an endpoint nobody listens
on) and :meth:`FakeWorkspace.fail_blob` (a 5xx or a dropped connection from the proxy). Every
request is kept
in :attr:`FakeWorkspace.requests`; a request nobody serves is answered 404 and kept in
:attr:`FakeWorkspace.unknown`.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import http.client
import ipaddress
import json
import math
import os
import re
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from azurite import read_body

SUBSCRIPTION = "00000000-1111-2222-3333-444444444444"
RESOURCE_GROUP = "test-rg"
WORKSPACE = "test-ws"
ARM = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.MachineLearningServices"
WS_PATH = (ARM + "/workspaces/{ws}").format(sub=SUBSCRIPTION, rg=RESOURCE_GROUP, ws=WORKSPACE)
WORKSPACE_ID = "11111111-2222-3333-4444-555555555555"
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
_HISTORY_TAGS = re.compile(
    r"^/history/v1\.0"
    + re.escape(WS_PATH)
    + r"/experiments/(?P<exp>[^/]+)/runs/(?P<name>[^/]+)/tags$",
    re.IGNORECASE,
)
#: Run history's run details (``jobs.stream`` polls them) and run data (``jobs.download``).
_HISTORY_DETAILS = re.compile(
    r"^/history/v1\.0" + re.escape(WS_PATH) + r"/runs/(?P<name>[^/]+)/details$", re.IGNORECASE
)
_HISTORY_RUNDATA = re.compile(r"^/history/v1\.0" + re.escape(WS_PATH) + r"/rundata$", re.IGNORECASE)
#: MLflow's REST API on the workspace, as azureml-mlflow calls it: ``https://<tracking URI
#: host>/mlflow/v2.0<workspace ARM id>/api/2.0/mlflow/<operation>`` (v1.0 with MLflow 1.x).
_MLFLOW = re.compile(
    r"^/mlflow/v[12]\.0" + re.escape(WS_PATH) + r"/api/2\.0/mlflow/(?P<op>.+)$", re.IGNORECASE
)


def _ws_route(tail: str) -> re.Pattern[str]:
    return re.compile(r"^" + re.escape(WS_PATH) + tail + r"$", re.IGNORECASE)


_ENV_VERSIONS = _ws_route(r"/environments/(?P<name>[^/]+)/versions")
_CODE_VERSIONS = _ws_route(r"/codes/(?P<name>[^/]+)/versions")
_CODE_VERSION = _ws_route(r"/codes/(?P<name>[^/]+)/versions/(?P<v>[^/]+)")
_CODE_PENDING = _ws_route(r"/codes/(?P<name>[^/]+)/versions/(?P<v>[^/]+)/startPendingUpload")
_DATA_CONTAINERS = _ws_route(r"/data")
_DATA_CONTAINER = _ws_route(r"/data/(?P<name>[^/]+)")
_DATA_VERSIONS = _ws_route(r"/data/(?P<name>[^/]+)/versions")
_DATA_VERSION = _ws_route(r"/data/(?P<name>[^/]+)/versions/(?P<v>[^/]+)")
_DATASTORES = _ws_route(r"/datastores")
_DATASTORE = _ws_route(r"/datastores/(?P<name>[^/]+)")
_DATASTORE_SECRETS = _ws_route(r"/datastores/(?P<name>[^/]+)/listSecrets")
_COMPUTES = _ws_route(r"/computes")
_COMPUTE = _ws_route(r"/computes/(?P<name>[^/]+)")
_VM_SIZES = re.compile(
    r"^/subscriptions/"
    + re.escape(SUBSCRIPTION)
    + r"/providers/Microsoft\.MachineLearningServices/locations/(?P<location>[^/]+)/vmSizes$",
    re.IGNORECASE,
)
#: References a job body makes to the workspace's resources (ARM ids, as the SDK sends them).
_REF_COMPUTE = re.compile(r"^" + re.escape(WS_PATH) + r"/computes/(?P<name>[^/]+)$", re.IGNORECASE)
_REF_ENV = re.compile(
    r"^" + re.escape(WS_PATH) + r"/environments/(?P<name>[^/]+)/versions/(?P<v>[^/]+)$",
    re.IGNORECASE,
)
_REF_CODE = re.compile(
    r"^" + re.escape(WS_PATH) + r"/codes/(?P<name>[^/]+)/versions/(?P<v>[^/]+)$", re.IGNORECASE
)
_REF_DATA = re.compile(
    r"^(?:azureml:)?" + re.escape(WS_PATH) + r"/data/(?P<name>[^/]+)/versions/(?P<v>[^/]+)$",
    re.IGNORECASE,
)
_REF_DATA_SHORT = re.compile(r"^azureml:(?P<name>[^/:@]+)[:@](?P<v>[^/:@]+)$")
_REF_DATASTORE = re.compile(
    r"^azureml://(?:subscriptions/[^/]+/resource[gG]roups/[^/]+/workspaces/[^/]+/)?"
    r"datastores/(?P<name>[^/]+)/paths/",
    re.IGNORECASE,
)
#: The service limits of runs ("Azure ML service limits"): checked on job PUT and run PATCH.
MAX_TAGS = MAX_PROPERTIES = 50
MAX_KEY = 100
MAX_VALUE = 1000
MAX_NAME = MAX_DISPLAY_NAME = MAX_EXPERIMENT_NAME = 256
MAX_DESCRIPTION = 5000
CONTENT_HASH_VERSION = "202208"
#: Azure VM sizes (the fields of Azure ML's VirtualMachineSize; figures from Azure's size pages).
VM_SIZES: tuple[dict[str, Any], ...] = (
    {"name": "Standard_DS3_v2", "family": "standardDSv2Family", "vCPUs": 4, "gpus": 0,
     "memoryGB": 14.0, "premiumIO": True},
    {"name": "Standard_D4s_v3", "family": "standardDSv3Family", "vCPUs": 4, "gpus": 0,
     "memoryGB": 16.0, "premiumIO": True},
    {"name": "Standard_NC6s_v3", "family": "standardNCSv3Family", "vCPUs": 6, "gpus": 1,
     "memoryGB": 112.0, "premiumIO": True},
    {"name": "Standard_NC12s_v3", "family": "standardNCSv3Family", "vCPUs": 12, "gpus": 2,
     "memoryGB": 224.0, "premiumIO": True},
    {"name": "Standard_NC24s_v3", "family": "standardNCSv3Family", "vCPUs": 24, "gpus": 4,
     "memoryGB": 448.0, "premiumIO": True},
    {"name": "Standard_NC24ads_A100_v4", "family": "StandardNCADSA100v4Family", "vCPUs": 24,
     "gpus": 1, "memoryGB": 220.0, "premiumIO": True},
    {"name": "Standard_NC48ads_A100_v4", "family": "StandardNCADSA100v4Family", "vCPUs": 48,
     "gpus": 2, "memoryGB": 440.0, "premiumIO": True},
    {"name": "Standard_ND96asr_v4", "family": "standardNDASv4_A100Family", "vCPUs": 96,
     "gpus": 8, "memoryGB": 900.0, "premiumIO": True},
)  # fmt: skip
#: Clusters every fake workspace has unless a test removes them (the tests' targets).
DEFAULT_COMPUTES = {"cpu-cluster": "Standard_DS3_v2", "gpu-cluster": "Standard_NC6s_v3"}
DEFAULT_DATASTORE = "workspaceblobstore"
#: The workspace's artifact store, where a job's logs and ``outputs/`` lie (under
#: ``ExperimentRun/dcid.<job>/``): what ``jobs.download`` reads for a job's default output.
ARTIFACT_DATASTORE = "workspaceartifactstore"
ARTIFACT_CONTAINER = "azureml"
#: The hosts of Azure the tests reach through :meth:`FakeWorkspace.client_environment`'s HTTPS
#: proxy: the workspace's MLflow host (its tracking URI's) and blob storage (Azurite's account).
MLFLOW_HOST = "westeurope.api.azureml.ms"
BLOB_SUFFIX = ".blob.core.windows.net"
#: What the stand-in ``az`` (azure-identity's AzureCliCredential) hands out.
AZ_TOKEN = "token-from-az"
AZ_SCRIPT = """#!{python}
import json, os, sys, time
with open({log!r}, "a", encoding="utf-8") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
expires = int(time.time()) + 3600
print(json.dumps({{
    "accessToken": {token!r}, "expires_on": expires,
    "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)),
    "subscription": {subscription!r}, "tenant": "tenant", "tokenType": "Bearer",
}}))
"""
#: MLflow's run statuses for the job statuses (anything else is RUNNING).
MLFLOW_STATUS = {
    "Completed": "FINISHED",
    "Failed": "FAILED",
    "Canceled": "KILLED",
    "NotResponding": "FAILED",
    "Paused": "FAILED",
    "NotStarted": "SCHEDULED",
    "Queued": "SCHEDULED",
}
#: The code asset :func:`backend_of` uses (registered in every fake workspace, no blobs).
DEFAULT_CODE = ("himl-snapshot", "1")


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and for the Azure hosts the
    workspace's HTTPS proxy answers for (:data:`MLFLOW_HOST`, ``*.blob.core.windows.net``):
    (certificate, key) PEM files."""
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
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    # the Azure hosts the workspace's HTTPS proxy stands in for
                    x509.DNSName(MLFLOW_HOST),
                    x509.DNSName("*" + BLOB_SUFFIX),
                ]
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
class PendingUpload:
    """One ``startPendingUpload``: the container the service made for it and what it handed
    out (``fault``: the storage fault this SAS carries, if any)."""

    name: str
    version: str
    container: str
    blob_uri: str
    sas_uri: str
    fault: str = ""


@dataclass
class Upload:
    """A code version registered with blobs in storage: which blobs, in which container."""

    code_id: str
    name: str
    version: str
    container: str
    #: The folder of the snapshot in the container ("" for the container's root).
    prefix: str
    #: Every blob under ``prefix`` when the version was registered (full blob names).
    blobs: list[str] = field(default_factory=list)
    #: The blob-store requests made into that container (through the proxy).
    requests: list[Any] = field(default_factory=list)


STORAGE_FAULTS = ("wrong-key", "read-only", "unreachable")


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
    #: Blob storage (an :class:`azurite.Azurite`): code uploads go there, through
    #: :attr:`blob_proxy`. None: no storage (``startPendingUpload`` is refused).
    storage: Any = field(default=None, repr=False)
    #: Code versions by ``name:version`` (code version resources).
    code_versions: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    #: Every ``startPendingUpload`` answered, in order.
    pending_uploads: list[PendingUpload] = field(default_factory=list, repr=False)
    #: Every code version registered with blobs, in order (a reused version adds none).
    uploads: list[Upload] = field(default_factory=list, repr=False)
    #: Data assets: name -> version -> data version resource (in creation order).
    data: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict, repr=False)
    datastores: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    computes: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    vm_sizes: list[dict[str, Any]] = field(
        default_factory=lambda: [dict(s) for s in VM_SIZES], repr=False
    )
    location: str = "westeurope"
    #: Storage faults the next ``startPendingUpload`` calls hand out (see :meth:`fail_storage`).
    storage_faults: list[str] = field(default_factory=list, repr=False)
    #: How many polls a job answers Running before its outcome (1: one, as ever).
    running_polls: int = 1
    #: MLflow metrics of the jobs (a job's name is its MLflow run id): job -> key ->
    #: [(step, value, timestamp ms), ...] in logging order (:meth:`log_metric`, ``log-batch``).
    metrics: dict[str, dict[str, list[tuple[int, float, int]]]] = field(
        default_factory=dict, repr=False
    )
    #: The artifacts of the jobs (logs, ``outputs/``): job -> path -> text, as written into the
    #: artifact store (:meth:`add_log`).
    artifacts: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)
    #: Host:port of every tunnel opened through the HTTPS proxy (:meth:`client_environment`).
    tunnels: list[str] = field(default_factory=list, repr=False)
    #: Requests the proxy forwarded to blob storage: (method, host, path and query, status).
    storage_requests: list[tuple[str, str, str, int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self._clock = 0
        self._running: dict[str, int] = {}
        self._last_ms = 0
        self._pending_logs: dict[str, list[tuple[str, str, str]]] = {}
        self._proxy: AzureProxy | None = None
        self.blob_proxy: Any = None
        if self.storage is not None:
            from azurite import BlobProxy

            self.blob_proxy = BlobProxy(self.storage)
        # a port bound but never listening: connections to it are refused at once
        self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._dead.bind(("127.0.0.1", 0))
        self.dead_url = f"http://127.0.0.1:{self._dead.getsockname()[1]}/devstoreaccount1"
        for name, vm_size in DEFAULT_COMPUTES.items():
            self.add_compute(name, vm_size=vm_size)
        self.add_datastore(DEFAULT_DATASTORE, default=True)
        self.add_code(*DEFAULT_CODE)
        self.cert_file, key_file = make_certificate(self.folder)
        self.key_file = key_file
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.blob_proxy is not None:
            self.blob_proxy.close()
        if self._proxy is not None:
            self._proxy.close()
        self._dead.close()

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

    # --- test controls: what a job records (metrics, logs), and the way to reach it -------

    def log_metric(
        self, job_name: str, key: str, points: Any, *, timestamp_ms: int | None = None
    ) -> None:
        """Log metric ``key`` of job ``job_name`` (its MLflow run) as the runner inside the job
        would: ``points`` is ``[(step, value), ...]``, logged in that order, a millisecond
        apart from ``timestamp_ms`` (default: now, and always after what was logged before)."""
        with self.lock:
            if job_name not in self.jobs:
                raise KeyError(f"no job {job_name} in the fake workspace")
            start = (
                max(int(time.time() * 1000), self._last_ms + 1)
                if timestamp_ms is None
                else timestamp_ms
            )
            history = self.metrics.setdefault(job_name, {}).setdefault(key, [])
            for offset, (step, value) in enumerate(points):
                history.append((int(step), float(value), start + offset))
                self._last_ms = max(self._last_ms, start + offset)

    def add_log(self, job_name: str, path: str, text: str, *, at: str | None = None) -> None:
        """Append ``text`` to artifact ``path`` of job ``job_name`` (``user_logs/std_log.txt``,
        ``outputs/runner.log``, ...) in the artifact store, blob
        ``ExperimentRun/dcid.<job>/<path>`` of container ``azureml``: now, or, with ``at``, once
        the job reaches that status (``Running``, or its outcome: what the job writes as it
        goes). Files under ``user_logs/``, ``system_logs/``, ``azureml-logs/`` and ``logs/``
        are the job's log files (run details' ``logFiles``). Needs storage."""
        if self.storage is None:
            raise RuntimeError("add_log needs a workspace with storage (FakeWorkspace(storage=))")
        with self.lock:
            job = self.jobs.get(job_name)
            if job is None:
                raise KeyError(f"no job {job_name} in the fake workspace")
            if at is None or job["properties"]["status"] == at:
                self._write_artifact(job_name, path, text)
            else:
                self._pending_logs.setdefault(job_name, []).append((at, path, text))

    def client_environment(self) -> dict[str, str]:
        """The environment that lets the clients that build their own connections reach this
        workspace without a network, as a user's machine reaches Azure:

        - ``HTTPS_PROXY``: an HTTPS proxy (:class:`AzureProxy`) that opens tunnels to
          :data:`MLFLOW_HOST` (into this workspace: the host of its MLflow tracking URI, as
          azureml-mlflow builds ``https://<host>/mlflow/v2.0/...`` from it) and to
          ``<account>.blob.core.windows.net`` (into Azurite: the URL azure-ai-ml builds for a
          datastore from its account name, for ``jobs.download``); any other host is refused.
          ``NO_PROXY`` keeps the loopback direct (the workspace and Azurite as the SDK is
          pointed at them);
        - ``REQUESTS_CA_BUNDLE``: this workspace's certificate (it also stands for those hosts);
        - ``AZURE_TOKEN_CREDENTIALS=AzureCliCredential`` and a stand-in ``az`` first on
          ``PATH``: azure-identity's default chain, the credential azureml-mlflow makes itself
          (``DefaultAzureCredential``), gets :data:`AZ_TOKEN` from it (each call is logged:
          :meth:`az_calls`);
        - ``AZUREML_CURRENT_CLOUD=AzureCloud``: azureml-mlflow otherwise asks
          management.azure.com for the cloud's metadata.

        Apply it with ``monkeypatch.setenv`` (and delete ``MLFLOW_TRACKING_TOKEN``: with it
        azureml-mlflow takes the token of a run inside Azure ML instead)."""
        import sys

        with self.lock:
            if self._proxy is None:
                self._proxy = AzureProxy(self)
        bin_dir = self.folder / "bin"
        bin_dir.mkdir(exist_ok=True)
        az = bin_dir / "az"
        if not az.exists():
            az.write_text(
                AZ_SCRIPT.format(
                    python=sys.executable,
                    log=str(self.folder / "az.log"),
                    token=AZ_TOKEN,
                    subscription=SUBSCRIPTION,
                ),
                encoding="utf-8",
            )
            az.chmod(0o755)
        proxy = f"http://127.0.0.1:{self._proxy.port}"
        direct = "127.0.0.1,localhost"
        return {
            "HTTPS_PROXY": proxy,
            "https_proxy": proxy,
            "NO_PROXY": direct,
            "no_proxy": direct,
            "REQUESTS_CA_BUNDLE": str(self.cert_file),
            "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
            "AZUREML_CURRENT_CLOUD": "AzureCloud",
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def az_calls(self) -> list[str]:
        """The command lines the stand-in ``az`` of :meth:`client_environment` ran."""
        log = self.folder / "az.log"
        return log.read_text(encoding="utf-8").splitlines() if log.exists() else []

    # --- test controls: storage, assets, computes ------------------------------------------

    def fail_storage(self, kind: str, times: int = 1) -> None:
        """The next ``times`` ``startPendingUpload`` answers hand out a SAS that fails:
        ``wrong-key`` (signed with another key: 403 ``AuthorizationFailure``), ``read-only``
        (read and list only: the uploads get 403 ``AuthorizationPermissionMismatch``) or
        ``unreachable`` (a blob endpoint nobody listens on: connections refused)."""
        if kind not in STORAGE_FAULTS:
            raise ValueError(f"unknown storage fault {kind!r}: one of {STORAGE_FAULTS}")
        with self.lock:
            self.storage_faults.extend([kind] * times)

    def fail_blob(self, method: str, path: str, status: int = 503, **kwargs: Any) -> Any:
        """Blob requests matching ``method`` and ``path`` (a regex searched in
        ``/<container>/<blob>``) get ``status`` from the proxy, ``times`` times (None: always);
        ``drop=True`` closes the connection instead."""
        if self.blob_proxy is None:
            raise RuntimeError("fail_blob needs a workspace with storage (FakeWorkspace(storage=))")
        return self.blob_proxy.fail(method, path, status, **kwargs)

    @property
    def blob_requests(self) -> list[Any]:
        """Every blob-store request made through the proxy (:class:`azurite.BlobRequest`)."""
        return [] if self.blob_proxy is None else list(self.blob_proxy.requests)

    def add_code(
        self,
        name: str,
        version: str = "1",
        code_uri: str = "",
        hash_sha256: str | None = None,
        is_anonymous: bool = False,
    ) -> dict[str, Any]:
        """Register a code version as if made earlier (no blobs are checked)."""
        properties: dict[str, str] = {}
        if hash_sha256 is not None:
            properties = {"hash_sha256": hash_sha256, "hash_version": CONTENT_HASH_VERSION}
        uri = code_uri or (
            f"https://himltest.blob.core.windows.net/{WORKSPACE_ID}-code/LocalUpload/{name}"
        )
        resource = self._code_resource(
            name, version, {"codeUri": uri, "isAnonymous": is_anonymous, "properties": properties}
        )
        with self.lock:
            self.code_versions[f"{name}:{version}"] = resource
        return resource

    def add_data(
        self,
        name: str,
        versions: Any = ("1",),
        type: str = "uri_folder",
        datastore: str = DEFAULT_DATASTORE,
        path: str | None = None,
    ) -> list[dict[str, Any]]:
        """Register data asset ``name`` with ``versions`` (oldest first), of ``type``
        (``uri_folder``, ``uri_file``, ``mltable``), in ``datastore`` (under ``path``)."""
        if isinstance(versions, (str, int)):
            versions = [versions]
        made = []
        with self.lock:
            for version in [str(v) for v in versions]:
                where = path or f"data/{name}/{version}/"
                uri = (
                    f"azureml://subscriptions/{SUBSCRIPTION}/resourcegroups/{RESOURCE_GROUP}/"
                    f"workspaces/{WORKSPACE}/datastores/{datastore}/paths/{where}"
                )
                resource = {
                    "id": f"{WS_PATH}/data/{name}/versions/{version}",
                    "name": version,
                    "type": "Microsoft.MachineLearningServices/workspaces/data/versions",
                    "properties": {
                        "dataType": type,
                        "dataUri": uri,
                        "description": None,
                        "tags": {},
                        "properties": {},
                        "isAnonymous": False,
                        "isArchived": False,
                    },
                    "systemData": self._system_data(),
                }
                self.data.setdefault(name, {})[version] = resource
                made.append(resource)
        return made

    def remove_data(self, name: str, version: str | None = None) -> None:
        with self.lock:
            if version is None:
                self.data.pop(name, None)
            else:
                self.data.get(name, {}).pop(str(version), None)
                if not self.data.get(name):
                    self.data.pop(name, None)

    def add_datastore(
        self,
        name: str,
        *,
        container: str | None = None,
        account: str | None = None,
        type: str = "AzureBlob",
        default: bool = False,
    ) -> dict[str, Any]:
        """Register a datastore (``AzureBlob`` by default) over ``account``/``container``."""
        account = account or (
            self.storage.account_name if self.storage is not None else "himlteststorage"
        )
        properties: dict[str, Any] = {
            "datastoreType": type,
            "accountName": account,
            "endpoint": "core.windows.net",
            "protocol": "https",
            "credentials": {"credentialsType": "AccountKey", "secrets": None},
            "isDefault": default,
            "description": None,
            "tags": {},
            "properties": {},
            "serviceDataAccessAuthIdentity": "WorkspaceSystemAssignedIdentity",
        }
        where = container or (f"azureml-blobstore-{WORKSPACE_ID}" if default else name)
        if type == "AzureFile":
            properties["fileShareName"] = where
        elif type == "AzureDataLakeGen2":
            properties["filesystem"] = where
        else:
            properties["containerName"] = where
        resource = {
            "id": f"{WS_PATH}/datastores/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/datastores",
            "properties": properties,
            "systemData": self._system_data(),
        }
        with self.lock:
            if default:
                for other in self.datastores.values():
                    other["properties"]["isDefault"] = False
            self.datastores[name] = resource
        return resource

    def remove_datastore(self, name: str) -> None:
        with self.lock:
            self.datastores.pop(name, None)

    def add_compute(
        self,
        name: str,
        vm_size: str = "Standard_NC6s_v3",
        max_nodes: int = 4,
        type: str = "AmlCompute",
        *,
        min_nodes: int = 0,
        priority: str = "Dedicated",
    ) -> dict[str, Any]:
        """Register a compute: an ``AmlCompute`` cluster of ``vm_size`` (0..``max_nodes``
        nodes), or a ``ComputeInstance``."""
        now = _iso(dt.datetime.now(dt.timezone.utc))
        if type == "ComputeInstance":
            inner: dict[str, Any] = {
                "vmSize": vm_size,
                "state": "Running",
                "applicationSharingPolicy": "Personal",
                "sshSettings": {"sshPublicAccess": "Disabled"},
            }
        else:
            inner = {
                "vmSize": vm_size,
                "vmPriority": priority,
                "osType": "Linux",
                "isolatedNetwork": False,
                "scaleSettings": {
                    "maxNodeCount": max_nodes,
                    "minNodeCount": min_nodes,
                    "nodeIdleTimeBeforeScaleDown": "PT2M",
                },
                "remoteLoginPortPublicAccess": "Disabled",
                "allocationState": "Steady",
                "allocationStateTransitionTime": now,
                "errors": None,
                "currentNodeCount": 0,
                "targetNodeCount": min_nodes,
                "nodeStateCounts": {
                    "idleNodeCount": 0,
                    "runningNodeCount": 0,
                    "preparingNodeCount": 0,
                    "unusableNodeCount": 0,
                    "leavingNodeCount": 0,
                    "preemptedNodeCount": 0,
                },
                "enableNodePublicIp": True,
            }
        resource = {
            "id": f"{WS_PATH}/computes/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/computes",
            "location": self.location,
            "tags": {},
            "identity": {"type": "None"},
            "properties": {
                "computeType": type,
                "computeLocation": self.location,
                "description": None,
                "createdOn": now,
                "modifiedOn": now,
                "provisioningState": "Succeeded",
                "provisioningErrors": None,
                "isAttachedCompute": False,
                "disableLocalAuth": True,
                "properties": inner,
            },
            "systemData": self._system_data(),
        }
        with self.lock:
            self.computes[name] = resource
        return resource

    def remove_compute(self, name: str) -> None:
        with self.lock:
            self.computes.pop(name, None)

    def add_environment(
        self, name: str, version: str, image: str = "mcr.microsoft.com/azureml/curated:1"
    ) -> dict[str, Any]:
        """Register an environment version (what ``environment="azureml:name:version"``
        refers to)."""
        with self.lock:
            reply = self._put_environment(name, version, {"properties": {"image": image}})
        return dict(reply.body)

    def code_version(self, code_id: str) -> dict[str, Any]:
        """The code version with ARM id ``code_id`` (or ``name:version``)."""
        match = _REF_CODE.match(code_id)
        key = f"{match['name']}:{match['v']}" if match else code_id
        with self.lock:
            return self.code_versions[key]

    def uploaded_files(self, code_id: str) -> dict[str, bytes]:
        """The files of code version ``code_id`` as they lie in storage: path relative to the
        snapshot's folder -> content (read from Azurite)."""
        if self.storage is None:
            raise RuntimeError("uploaded_files needs a workspace with storage")
        located = self._locate(self.code_version(code_id)["properties"]["codeUri"])
        if located is None:
            raise KeyError(f"{code_id}: its codeUri is not in this workspace's storage")
        container, prefix = located
        blobs = self.storage.blobs(container, prefix or None)
        if prefix in blobs:  # a single file
            return {prefix.rsplit("/", 1)[-1]: blobs[prefix]}
        cut = len(prefix) + 1 if prefix else 0
        return {
            name[cut:]: data
            for name, data in blobs.items()
            if not prefix or name.startswith(prefix + "/")
        }

    # --- the service ---------------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        authorization: str | None = None,
    ) -> Reply:
        """Answer one request (``authorization``: its header, None: not checked)."""
        with self.lock:
            return self._route(method, path, query, body, authorization)

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        authorization: str | None = None,
    ) -> Reply:
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
        if (match := _HISTORY_TAGS.match(path)) and method == "DELETE":
            return self._delete_tags(match["name"], body)
        if (match := _ENV.match(path)) and method == "GET":
            return self._get_environment(match["name"], match["v"])
        if (match := _ENV_VERSIONS.match(path)) and method == "GET":
            versions = [
                resource
                for key, resource in self.environments.items()
                if key.rsplit(":", 1)[0] == match["name"]
            ]
            return self._list_versions(versions, query, f"environments/{match['name']}")
        if (match := _CODE_PENDING.match(path)) and method == "POST":
            return self._start_pending_upload(match["name"], match["v"], body)
        if (match := _CODE_VERSION.match(path)) and method in ("GET", "PUT"):
            if method == "GET":
                return self._get_code(match["name"], match["v"])
            return self._put_code(match["name"], match["v"], body)
        if (match := _CODE_VERSIONS.match(path)) and method == "GET":
            return self._list_codes(match["name"], query)
        if (match := _DATA_VERSION.match(path)) and method == "GET":
            return self._get_data(match["name"], match["v"])
        if (match := _DATA_VERSIONS.match(path)) and method == "GET":
            return self._list_data_versions(match["name"], query)
        if (match := _DATA_CONTAINER.match(path)) and method == "GET":
            return self._get_data_container(match["name"])
        if _DATA_CONTAINERS.match(path) and method == "GET":
            names = sorted(self.data)
            return Reply(200, {"value": [self._data_container(n) for n in names]})
        if (match := _DATASTORE.match(path)) and method == "GET":
            datastore = self.datastores.get(match["name"])
            if datastore is None:
                return not_found(f"Datastore {match['name']} not found in workspace {WORKSPACE}.")
            return Reply(200, copy.deepcopy(datastore))
        if _DATASTORES.match(path) and method == "GET":
            wanted = (query.get("isDefault") or [""])[0].lower()
            stores = [
                copy.deepcopy(d)
                for d in self.datastores.values()
                if not wanted or str(bool(d["properties"]["isDefault"])).lower() == wanted
            ]
            return Reply(200, {"value": stores})
        if (match := _COMPUTE.match(path)) and method == "GET":
            compute = self.computes.get(match["name"])
            if compute is None:
                return not_found(f"Compute {match['name']} not found in workspace {WORKSPACE}.")
            return Reply(200, copy.deepcopy(compute))
        if _COMPUTES.match(path) and method == "GET":
            return Reply(200, {"value": [copy.deepcopy(c) for c in self.computes.values()]})
        if (match := _VM_SIZES.match(path)) and method == "GET":
            return Reply(200, {"value": [self._vm_size(size) for size in self.vm_sizes]})
        if match := _MLFLOW.match(path):
            if authorization is not None and not authorization.startswith("Bearer "):
                return Reply(
                    401, {"error_code": "UNAUTHENTICATED", "message": "A bearer token is required."}
                )
            reply = self._mlflow(method, match["op"], query, body)
            if reply is not None:
                return reply
        # Run history's details and run data, and the datastores' secrets, with blob storage
        # only: a job's logs lie there (without, they answer 404 as they always did).
        if self.storage is not None:
            history = _HISTORY_DETAILS.match(path) or _HISTORY_RUNDATA.match(path)
            if history and authorization is not None and not authorization.startswith("Bearer "):
                return error(401, "AuthenticationFailed", "A bearer token is required.")
            if (match := _HISTORY_DETAILS.match(path)) and method == "GET":
                return self._run_details(match["name"])
            if _HISTORY_RUNDATA.match(path) and method == "POST":
                return self._run_data(body)
            if (match := _DATASTORE_SECRETS.match(path)) and method == "POST":
                return self._datastore_secrets(match["name"])
        self.unknown.append(f"{method} {path}")
        return error(404, "NotFound", f"no route for {method} {path} in the fake workspace")

    def _system_data(self) -> dict[str, Any]:
        """``systemData`` with a creation time that grows by a millisecond per resource made
        (so "latest" and ``createdtime`` orders are well defined)."""
        with self.lock:
            self._clock += 1
        when = _iso(dt.datetime.now(dt.timezone.utc) + dt.timedelta(milliseconds=self._clock))
        return {
            "createdAt": when,
            "createdBy": "tester@example.com",
            "createdByType": "User",
            "lastModifiedAt": when,
            "lastModifiedBy": "tester@example.com",
            "lastModifiedByType": "User",
        }

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
        refused = check_limits(
            name=name,
            display_name=properties.get("displayName"),
            description=properties.get("description"),
            experiment_name=properties.get("experimentName"),
            tags=properties.get("tags"),
            properties=properties.get("properties"),
        ) or self._check_references(properties)
        if refused is not None:
            return refused
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
        name = job["name"]
        step = STEPS.index(status) if status in STEPS else 0
        if step + 1 < len(STEPS):
            properties["status"] = STEPS[step + 1]
            if properties["status"] == "Running":
                self._running[name] = 1
            self._reached(job)
            return
        if self._running.get(name, 1) < self.running_polls:
            self._running[name] = self._running.get(name, 1) + 1
            return
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
        self._reached(job)

    def _reached(self, job: dict[str, Any]) -> None:
        """The job got its current status: write the logs :meth:`add_log` kept for it."""
        name, status = job["name"], job["properties"]["status"]
        pending = self._pending_logs.get(name)
        if not pending:
            return
        self._pending_logs[name] = [entry for entry in pending if entry[0] != status]
        for at, path, text in pending:
            if at == status:
                self._write_artifact(name, path, text)

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
        key = f"{name}:{version}"
        created = key not in self.environments
        resource = {
            "id": f"{WS_PATH}/environments/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/environments/versions",
            "properties": dict((body or {}).get("properties") or {}),
            "systemData": (
                self._system_data() if created else self.environments[key].get("systemData")
            ),
        }
        self.environments[key] = resource
        return Reply(201 if created else 200, resource)

    def _workspace(self) -> dict[str, Any]:
        return {
            "id": WS_PATH,
            "name": WORKSPACE,
            "type": "Microsoft.MachineLearningServices/workspaces",
            "location": self.location,
            "properties": {
                "discoveryUrl": f"{self.url}/discovery",
                "mlFlowTrackingUri": f"azureml://{MLFLOW_HOST}/mlflow/v1.0{WS_PATH}",
                "workspaceId": WORKSPACE_ID,
            },
        }

    def _patch_run(self, name: str, body: Any) -> Reply:
        job = self.jobs.get(name)
        if job is None:
            return error(404, "UserError", f"Run {name} not found.")
        body = body or {}
        properties = job["properties"]
        new_props = body.get("properties") or {}
        refused = check_limits(
            display_name=body.get("displayName"),
            description=body.get("description"),
            tags={**properties["tags"], **(body.get("tags") or {})},
            properties={**properties["properties"], **new_props},
        )
        if refused is not None:
            return refused
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
        return Reply(200, self._run(job))

    def _run(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job as run history's ``Run``."""
        properties = job["properties"]
        return {
            "runId": job["name"],
            "displayName": properties.get("displayName"),
            "description": properties.get("description"),
            "status": properties["status"],
            "tags": dict(properties["tags"]),
            "properties": dict(properties["properties"]),
            "hidden": properties["isArchived"],
        }

    def _delete_tags(self, name: str, body: Any) -> Reply:
        """``DELETE .../runs/{run}/tags`` with a JSON list of keys: removes those tags
        (unknown keys are ignored), answers the run."""
        job = self.jobs.get(name)
        if job is None:
            return error(404, "UserError", f"Run {name} not found.")
        if not isinstance(body, list) or not all(isinstance(key, str) for key in body):
            return error(400, "UserError", "The request body must be a list of tag keys.")
        for key in body:
            job["properties"]["tags"].pop(key, None)
        return Reply(200, self._run(job))

    # --- MLflow on the workspace (azureml-mlflow's REST calls) -------------------------------

    def _mlflow(self, method: str, op: str, query: dict[str, list[str]], body: Any) -> Reply | None:
        """MLflow's REST API over the jobs (a job's name is its MLflow run id), in MLflow's
        shapes: ``GET runs/get``, ``GET metrics/get-history``, ``POST runs/log-batch``. An
        unknown run is MLflow's 404 ``RESOURCE_DOES_NOT_EXIST``; None: no such operation."""
        params = body if method == "POST" and isinstance(body, dict) else {}
        run_id = (
            str(params.get("run_id") or params.get("run_uuid") or "")
            or (query.get("run_id") or query.get("run_uuid") or [""])[0]
        )
        known = {
            ("GET", "runs/get"),
            ("GET", "metrics/get-history"),
            ("POST", "runs/log-batch"),
        }
        if (method, op) not in known:
            return None
        job = self.jobs.get(run_id)
        if job is None:
            return Reply(
                404,
                {
                    "error_code": "RESOURCE_DOES_NOT_EXIST",
                    "message": f"Run with id={run_id} not found",
                },
            )
        if op == "runs/get":
            return Reply(200, {"run": self._mlflow_run(job)})
        if op == "metrics/get-history":
            key = (query.get("metric_key") or [""])[0]
            history = self.metrics.get(run_id, {}).get(key, [])
            found = [_mlflow_metric(key, *point) for point in history]
            return Reply(200, {"metrics": found} if found else {})
        # runs/log-batch: what MLflow inside the job sends (metrics; tags become the job's)
        history = self.metrics.setdefault(run_id, {})
        for metric in params.get("metrics") or []:
            history.setdefault(str(metric["key"]), []).append(
                (
                    int(metric.get("step") or 0),
                    float(metric["value"]),
                    int(metric.get("timestamp") or 0),
                )
            )
        for tag in params.get("tags") or []:
            job["properties"]["tags"][str(tag["key"])] = str(tag.get("value", ""))
        return Reply(200, {})

    def _mlflow_run(self, job: dict[str, Any]) -> dict[str, Any]:
        """A job as MLflow's ``Run``: its info, its latest metrics and its tags."""
        properties = job["properties"]
        name = job["name"]
        experiment = _experiment_id(job)
        started = int(dt.datetime.fromisoformat(job["systemData"]["createdAt"]).timestamp() * 1000)
        info: dict[str, Any] = {
            "run_id": name,
            "run_uuid": name,
            "run_name": properties.get("displayName") or name,
            "experiment_id": experiment,
            "user_id": job["systemData"]["createdBy"],
            "status": MLFLOW_STATUS.get(properties["status"], "RUNNING"),
            "start_time": started,
            "artifact_uri": (
                f"azureml://{MLFLOW_HOST}/mlflow/v2.0{WS_PATH}/experiments/{experiment}/runs/"
                f"{name}/artifacts"
            ),
            "lifecycle_stage": "active",
        }
        if properties["status"] in TERMINAL:
            info["end_time"] = started + 1000
        latest = [
            _mlflow_metric(key, *max(points, key=lambda p: (p[0], p[2])))
            for key, points in sorted(self.metrics.get(name, {}).items())
            if points
        ]
        tags = [{"key": k, "value": str(v)} for k, v in sorted(properties["tags"].items())]
        return {"info": info, "data": {"metrics": latest, "params": [], "tags": tags}}

    # --- run history: details, run data; the artifact store --------------------------------

    def _artifact_store(self) -> str:
        """The artifact store's container (made, and the datastore registered, on first use).
        One container per fake workspace: the Azurite is shared by the tests of a process, and
        job names repeat across tests."""
        if ARTIFACT_DATASTORE not in self.datastores:
            container = f"{ARTIFACT_CONTAINER}-{uuid.uuid4().hex[:12]}"
            self.storage.create_container(container)
            self.add_datastore(ARTIFACT_DATASTORE, container=container)
        return str(self.datastores[ARTIFACT_DATASTORE]["properties"]["containerName"])

    def _write_artifact(self, job_name: str, path: str, text: str) -> None:
        container = self._artifact_store()
        content = self.artifacts.setdefault(job_name, {}).get(path, "") + text
        self.artifacts[job_name][path] = content
        blob = self.storage.service().get_blob_client(
            container, f"ExperimentRun/dcid.{job_name}/{path}"
        )
        blob.upload_blob(content.encode("utf-8"), overwrite=True)

    def _log_files(self, job_name: str) -> dict[str, str]:
        """Run details' ``logFiles``: each log of the job -> a read SAS URL of its blob
        (through :attr:`blob_proxy`, as the code upload's SAS URIs)."""
        container = self._artifact_store()
        sas = self.storage.container_sas_url(container, "r", base_url=self.blob_proxy.url)
        base, _, token = sas.partition("?")
        return {
            path: f"{base}/{quote(f'ExperimentRun/dcid.{job_name}/{path}')}?{token}"
            for path in sorted(self.artifacts.get(job_name, {}))
            if path.startswith(("user_logs/", "system_logs/", "azureml-logs/", "logs/"))
        }

    def _run_details(self, name: str) -> Reply:
        """``GET .../runs/{run}/details`` (a poll of the job: it moves on, as by a GET)."""
        job = self.jobs.get(name)
        if job is None:
            return error(404, "UserError", f"Run {name} not found.")
        self._advance(job)
        properties = job["properties"]
        status = properties["status"]
        compute = _REF_COMPUTE.match(str(properties.get("computeId") or ""))
        details: dict[str, Any] = {
            "runId": name,
            "runUuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{WS_PATH}/runs/{name}")),
            "status": status,
            "target": compute["name"] if compute else None,
            "createdTimeUtc": job["systemData"]["createdAt"],
            "tags": dict(properties["tags"]),
            "properties": dict(properties["properties"]),
            "logFiles": self._log_files(name),
            "warnings": [],
        }
        if status == "Failed":
            message = properties["tags"].get("himl.error_tail") or "The job failed."
            details["error"] = {"error": {"code": "UserError", "message": message}}
        return Reply(200, details)

    def _run_data(self, body: Any) -> Reply:
        """``POST .../rundata`` (body ``{runId, selectRunMetadata, ...}``): the run's metadata
        (no named outputs: the default output is the artifact store's
        ``ExperimentRun/dcid.<job>/``, where the SDK looks for it)."""
        name = str((body or {}).get("runId") or "")
        job = self.jobs.get(name)
        if job is None:
            return error(404, "UserError", f"Run {name} not found.")
        self._artifact_store()
        run = {
            **self._run(job),
            "experimentId": _experiment_id(job),
            "createdUtc": job["systemData"]["createdAt"],
            "outputs": None,
        }
        return Reply(200, {"runMetadata": run, "runDefinition": None, "jobSpecification": None})

    def _datastore_secrets(self, name: str) -> Reply:
        """``POST .../datastores/{name}/listSecrets``: the account key (the SDK asks it to read
        a datastore's blobs)."""
        if name not in self.datastores:
            return not_found(f"Datastore {name} not found in workspace {WORKSPACE}.")
        return Reply(200, {"secretsType": "AccountKey", "key": self.storage.account_key})

    # --- references a job makes ----------------------------------------------------------

    def _check_references(self, properties: dict[str, Any]) -> Reply | None:
        """What the service checks of a new job's references: its compute, environment, code
        and the data assets / datastores of its inputs and outputs exist."""
        compute = properties.get("computeId")
        if compute:
            match = _REF_COMPUTE.match(str(compute))
            if match is None:
                return error(400, "UserError", f"Invalid compute id: {compute}.")
            if match["name"] not in self.computes:
                return error(
                    400,
                    "UserError",
                    f"Compute {match['name']} not found in workspace {WORKSPACE}. "
                    "Create it, or name an existing compute target.",
                )
        environment = str(properties.get("environmentId") or "")
        if environment and not _foreign(environment):
            match = _REF_ENV.match(environment)
            if match is None:
                return error(400, "UserError", f"Invalid environment id: {environment}.")
            if f"{match['name']}:{match['v']}" not in self.environments:
                return error(400, "UserError", f"Could not find asset with ID: {environment}")
        code = str(properties.get("codeId") or "")
        if code and not _foreign(code):
            match = _REF_CODE.match(code)
            if match is None:
                return error(400, "UserError", f"Invalid code id: {code}.")
            if f"{match['name']}:{match['v']}" not in self.code_versions:
                return error(400, "UserError", f"Could not find asset with ID: {code}")
        for kind in ("inputs", "outputs"):
            for key, value in (properties.get(kind) or {}).items():
                uri = str((value or {}).get("uri") or "") if isinstance(value, dict) else ""
                refused = self._check_uri(kind[:-1], key, uri)
                if refused is not None:
                    return refused
        return None

    def _check_uri(self, kind: str, key: str, uri: str) -> Reply | None:
        if match := (_REF_DATA.match(uri) or _REF_DATA_SHORT.match(uri)):
            name, version = match["name"], match["v"]
            versions = self.data.get(name, {})
            if version == "latest" and versions:
                return None
            if version not in versions:
                return error(
                    400,
                    "UserError",
                    f"{kind} {key}: could not find asset with ID: "
                    f"azureml:{WS_PATH}/data/{name}/versions/{version}",
                )
        elif (match := _REF_DATASTORE.match(uri)) and match["name"] not in self.datastores:
            return error(
                400,
                "UserError",
                f"{kind} {key}: datastore {match['name']} not found in workspace {WORKSPACE}.",
            )
        return None

    # --- environments, code --------------------------------------------------------------

    def _get_environment(self, name: str, version: str) -> Reply:
        resource = self.environments.get(f"{name}:{version}")
        if resource is None:
            return not_found(f"Environment {name}:{version} not found in workspace {WORKSPACE}.")
        return Reply(200, copy.deepcopy(resource))

    def _code_resource(self, name: str, version: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"{WS_PATH}/codes/{name}/versions/{version}",
            "name": version,
            "type": "Microsoft.MachineLearningServices/workspaces/codes/versions",
            "properties": {
                "description": properties.get("description"),
                "tags": dict(properties.get("tags") or {}),
                "properties": {k: str(v) for k, v in (properties.get("properties") or {}).items()},
                "isArchived": bool(properties.get("isArchived", False)),
                "isAnonymous": bool(properties.get("isAnonymous", False)),
                "codeUri": properties.get("codeUri"),
                "provisioningState": "Succeeded",
            },
            "systemData": self._system_data(),
        }

    def _get_code(self, name: str, version: str) -> Reply:
        resource = self.code_versions.get(f"{name}:{version}")
        if resource is None:
            return not_found(f"Code {name}:{version} not found in workspace {WORKSPACE}.")
        return Reply(200, copy.deepcopy(resource))

    def _list_codes(self, name: str, query: dict[str, list[str]]) -> Reply:
        """Versions of code ``name``; with ``hash`` (and ``hashVersion``), the versions with
        that content hash under any name (the SDK names each anonymous snapshot anew)."""
        wanted = (query.get("hash") or [""])[0]
        hash_version = (query.get("hashVersion") or [""])[0]
        found = []
        for key, resource in self.code_versions.items():
            props = resource["properties"]["properties"]
            if wanted:
                if props.get("hash_sha256") != wanted:
                    continue
                if hash_version and str(props.get("hash_version")) != hash_version:
                    continue
            elif key.split(":", 1)[0] != name:
                continue
            found.append(copy.deepcopy(resource))
        return Reply(200, {"value": found})

    def _start_pending_upload(self, name: str, version: str, body: Any) -> Reply:
        kind = (body or {}).get("pendingUploadType")
        if kind != "TemporaryBlobReference":
            return error(
                400, "UserError", f"pendingUploadType must be TemporaryBlobReference, not {kind}."
            )
        if self.storage is None:
            return error(
                400,
                "UserError",
                "this fake workspace has no blob storage: make it with "
                "FakeWorkspace(..., storage=azurite) (the storage_workspace fixture)",
            )
        from azurite import WRONG_KEY

        fault = self.storage_faults.pop(0) if self.storage_faults else ""
        container = str(uuid.uuid4())
        self.storage.create_container(container)
        base = self.dead_url if fault == "unreachable" else self.blob_proxy.url
        sas_uri = self.storage.container_sas_url(
            container,
            "rl" if fault == "read-only" else "racwdl",
            account_key=WRONG_KEY if fault == "wrong-key" else self.storage.account_key,
            base_url=base,
        )
        blob_uri = f"{base}/{container}"
        self.pending_uploads.append(
            PendingUpload(name, version, container, blob_uri, sas_uri, fault)
        )
        account = self.storage.account_name
        return Reply(
            200,
            {
                "blobReferenceForConsumption": {
                    "blobUri": blob_uri,
                    "storageAccountArmId": (
                        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{RESOURCE_GROUP}/"
                        f"providers/Microsoft.Storage/storageAccounts/{account}"
                    ),
                    "credential": {"credentialType": "SAS", "sasUri": sas_uri},
                },
                "pendingUploadId": str(uuid.uuid4()),
                "pendingUploadType": "TemporaryBlobReference",
            },
        )

    def _locate(self, uri: str) -> tuple[str, str] | None:
        """(container, folder) of a blob URI in this workspace's storage; None elsewhere."""
        if self.storage is None or not uri:
            return None
        for base in (self.blob_proxy.url, self.storage.url, self.dead_url):
            if uri.startswith(base + "/"):
                container, _, prefix = uri[len(base) + 1 :].partition("/")
                return container, prefix.strip("/")
        return None

    def _put_code(self, name: str, version: str, body: Any) -> Reply:
        props = dict((body or {}).get("properties") or {})
        uri = str(props.get("codeUri") or "")
        if not uri:
            return error(400, "UserError", "codeUri is required.")
        key = f"{name}:{version}"
        existing = self.code_versions.get(key)
        if existing is not None:
            if existing["properties"]["codeUri"] != uri:
                return error(400, "UserError", "Asset paths cannot be updated.")
            return Reply(200, copy.deepcopy(existing))
        upload: Upload | None = None
        if self.storage is not None:
            located = self._locate(uri)
            if located is None:
                return error(400, "UserError", f"codeUri {uri} is not in the workspace's storage.")
            container, prefix = located
            blobs = (
                self.storage.blob_names(container, prefix or None)
                if self.storage.container_exists(container)
                else []
            )
            blobs = [b for b in blobs if not prefix or b == prefix or b.startswith(prefix + "/")]
            if not blobs:
                return error(
                    400,
                    "UserError",
                    f"codeUri {uri}: no blobs were uploaded there (nothing under "
                    f"{prefix or 'the container'} in container {container}).",
                )
            code_id = f"{WS_PATH}/codes/{name}/versions/{version}"
            requests = [r for r in self.blob_requests if r.container == container]
            upload = Upload(code_id, name, version, container, prefix, blobs, requests)
        resource = self._code_resource(name, version, props)
        self.code_versions[key] = resource
        if upload is not None:
            self.uploads.append(upload)
        return Reply(201, copy.deepcopy(resource))

    # --- data ----------------------------------------------------------------------------

    def _get_data(self, name: str, version: str) -> Reply:
        resource = self.data.get(name, {}).get(version)
        if resource is None:
            return not_found(f"Data {name}:{version} not found in workspace {WORKSPACE}.")
        return Reply(200, copy.deepcopy(resource))

    def _data_container(self, name: str) -> dict[str, Any]:
        versions = list(self.data[name].values())
        latest = versions[-1]
        numeric = [int(v["name"]) for v in versions if v["name"].isdigit()]
        return {
            "id": f"{WS_PATH}/data/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/data",
            "properties": {
                "dataType": latest["properties"]["dataType"],
                "description": None,
                "tags": {},
                "properties": {},
                "isArchived": False,
                "latestVersion": latest["name"],
                "nextVersion": str(max(numeric) + 1) if numeric else None,
            },
            "systemData": copy.deepcopy(versions[0]["systemData"]),
        }

    def _get_data_container(self, name: str) -> Reply:
        if not self.data.get(name):
            return not_found(f"Data {name} not found in workspace {WORKSPACE}.")
        return Reply(200, self._data_container(name))

    def _list_data_versions(self, name: str, query: dict[str, list[str]]) -> Reply:
        return self._list_versions(list(self.data.get(name, {}).values()), query, f"data/{name}")

    def _list_versions(
        self, versions: list[dict[str, Any]], query: dict[str, list[str]], where: str
    ) -> Reply:
        """A list of asset versions: ``$orderBy`` (``createdtime desc``/``asc``, what the
        SDK's ``label="latest"`` of environments and models sends with ``$top=1``), ``$top``,
        paged with ``$skipToken``."""
        order = (query.get("$orderBy") or [""])[0].lower()
        if order.startswith("createdtime"):
            versions = sorted(
                versions, key=lambda v: v["systemData"]["createdAt"], reverse=order.endswith("desc")
            )
        start = int((query.get("$skipToken") or ["0"])[0])
        top = int((query.get("$top") or ["0"])[0] or 0)
        size = min(top, self.page_size) if top else self.page_size
        page = versions[start : start + size]
        reply: dict[str, Any] = {"value": [copy.deepcopy(v) for v in page]}
        end = start + len(page)
        if end < len(versions) and not (top and end >= top):
            params = {k: v[0] for k, v in query.items() if k != "$skipToken"}
            params["$skipToken"] = str(end)
            reply["nextLink"] = f"{self.url}{WS_PATH}/{where}/versions?{urlencode(params)}"
        return Reply(200, reply)

    # --- computes ------------------------------------------------------------------------

    def _vm_size(self, size: dict[str, Any]) -> dict[str, Any]:
        return {
            "osVhdSizeMB": 1047552,
            "lowPriorityCapable": True,
            "supportedComputeTypes": ["AmlCompute", "ComputeInstance"],
            **size,
        }


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


def not_found(message: str) -> Reply:
    """The service's 404 for a resource that does not exist (``ResourceNotFoundError``)."""
    return error(404, "UserError", message)


def _experiment_id(job: dict[str, Any]) -> str:
    """The id of a job's experiment (a uuid, as the service's: here, of its name)."""
    name = job["properties"].get("experimentName")
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{WS_PATH}/experiments/{name}"))


def _mlflow_float(value: float) -> Any:
    """A double as MLflow's JSON writes it (protobuf's JSON: NaN and infinities as strings)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _mlflow_metric(key: str, step: int, value: float, timestamp: int) -> dict[str, Any]:
    return {"key": key, "value": _mlflow_float(value), "timestamp": timestamp, "step": step}


def _iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _foreign(asset_id: str) -> bool:
    """An id the workspace cannot check: a registry asset or a curated environment."""
    lowered = asset_id.lower()
    return lowered.startswith(("azureml://registries/", "azureml:azureml-", "azureml-"))


def check_limits(
    *,
    name: str | None = None,
    display_name: Any = None,
    description: Any = None,
    experiment_name: Any = None,
    tags: Any = None,
    properties: Any = None,
) -> Reply | None:
    """The run limits of Azure ML's "service limits" page: a 400 UserError naming the limit
    broken, or None."""
    texts = (
        ("Job name", name, MAX_NAME),
        ("DisplayName", display_name, MAX_DISPLAY_NAME),
        ("Description", description, MAX_DESCRIPTION),
        ("Experiment name", experiment_name, MAX_EXPERIMENT_NAME),
    )
    for what, value, limit in texts:
        if value is not None and len(str(value)) > limit:
            return error(
                400,
                "UserError",
                f"{what} is {len(str(value))} characters long: the limit is {limit} characters.",
            )
    for what, values, count in (
        ("tags", tags, MAX_TAGS),
        ("properties", properties, MAX_PROPERTIES),
    ):
        values = values or {}
        singular = "Tag" if what == "tags" else "Property"
        if len(values) > count:
            return error(
                400,
                "UserError",
                f"A run has {len(values)} {what}: the limit is {count} {what} per run.",
            )
        for key, value in values.items():
            if len(str(key)) > MAX_KEY:
                return error(
                    400,
                    "UserError",
                    f"{singular} key {str(key)[:40]}... is {len(str(key))} characters long: "
                    f"the limit for a {singular.lower()} key is {MAX_KEY} characters.",
                )
            if value is not None and len(str(value)) > MAX_VALUE:
                return error(
                    400,
                    "UserError",
                    f"{singular} {key} has a value of {len(str(value))} characters: the limit "
                    f"for a {singular.lower()} value is {MAX_VALUE} characters.",
                )
    return None


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
            reply = workspace.handle(
                self.command, parts.path, query, body, self.headers.get("Authorization", "")
            )
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


# --- the network to Azure: an HTTPS proxy ------------------------------------------------------

#: Headers not passed on by the proxy (hop by hop; ``Host`` is set again).
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer"}


class AzureProxy:
    """An HTTPS proxy (``CONNECT host:443``) on its own loopback port, standing for the network
    between a user's machine and Azure (see :meth:`FakeWorkspace.client_environment`). A tunnel
    to :data:`MLFLOW_HOST` is served by the workspace itself; one to the storage account's
    ``<account>.blob.core.windows.net`` is passed on to Azurite with its ``Host`` header (Azurite
    reads the account from a production-style host name); TLS is ended with the workspace's
    certificate. Tunnels to any other host are refused (502): the tests have no network."""

    def __init__(self, workspace: FakeWorkspace) -> None:
        self.workspace = workspace
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(workspace.cert_file, workspace.key_file)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _proxy_handler(proxy: AzureProxy) -> type[BaseHTTPRequestHandler]:
    workspace = proxy.workspace

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_CONNECT(self) -> None:
            host = self.path.rpartition(":")[0].lower()
            with workspace.lock:
                workspace.tunnels.append(self.path)
            storage = workspace.storage
            inner: type[BaseHTTPRequestHandler]
            if host == MLFLOW_HOST:
                inner = _handler(workspace)
            elif storage is not None and host == storage.account_name + BLOB_SUFFIX:
                inner = _storage_forwarder(workspace)
            else:
                self.send_error(502, f"no route to {host}: the tests have no network")
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            self.close_connection = True
            try:
                tls = proxy.context.wrap_socket(self.connection, server_side=True)
            except (ssl.SSLError, OSError):
                return
            try:
                inner(tls, self.client_address, self.server)
            except (ssl.SSLError, OSError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    tls.close()

    return Handler


def _storage_forwarder(workspace: FakeWorkspace) -> type[BaseHTTPRequestHandler]:
    """Requests inside a tunnel to the storage account, passed on to Azurite."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def _serve(self) -> None:
            body = read_body(self)
            host = self.headers.get("Host") or ""
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            upstream = http.client.HTTPConnection("127.0.0.1", workspace.storage.port, timeout=30)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            with workspace.lock:
                workspace.storage_requests.append((self.command, host, self.path, response.status))
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            length = response.getheader("Content-Length") or "0"
            self.send_header("Content-Length", length if self.command == "HEAD" else str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

    return Handler


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


#: The ``make_runs`` fixture of conftest.py: write a cluster manifest, expand its runs (here,
#: not in conftest, so test modules import it by a name no other folder's conftest shadows).
MakeRuns = Callable[..., list[Any]]

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
        "code": lambda *_root: CODE_ID,
        "default_compute": "cpu-cluster",
        "poll_s": 0.0,
        "workspace": Workspace(SUBSCRIPTION, RESOURCE_GROUP, WORKSPACE, source="test"),
        **kwargs,
    }
    return AzureMLBackend(client, root=root, **options)


def spec_of(job: dict[str, Any]) -> dict[str, Any]:
    """The run spec stored on a job of the fake workspace: its ``HIML_RUN_SPEC`` environment
    variable (what the job runs), else the ``himl.spec[.N]`` properties."""
    variables = job["properties"].get("environmentVariables") or {}
    if variables.get("HIML_RUN_SPEC"):
        return dict(json.loads(variables["HIML_RUN_SPEC"]).get("spec") or {})
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
    """Failed for a run whose ``params.behaviour`` is ``fail`` (``fail_once``: its first
    attempt), else Completed."""
    behaviour = spec_of(job).get("params", {}).get("behaviour")
    attempt = (job["properties"].get("properties") or {}).get("himl.attempt", "1")
    failing = behaviour == "fail" or (behaviour == "fail_once" and attempt == "1")
    return "Failed" if failing else "Completed"
