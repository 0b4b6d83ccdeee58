"""Which Azure ML workspace, with which credentials and timeouts; Azure's errors in our words.

- :func:`find_workspace`: the workspace's coordinates, from (first found wins)
  1. an explicit config file (``compute.workspace_config`` / ``--workspace-config``);
  2. the environment: ``AZUREML_SUBSCRIPTION_ID``, ``AZUREML_RESOURCE_GROUP`` and
     ``AZUREML_WORKSPACE_NAME`` (all three);
  3. ``config.json`` searched upward from the project root (the file Azure ML Studio downloads:
     ``subscription_id``, ``resource_group``, ``workspace_name``).
- :func:`ml_client`: an ``MLClient`` over it. Credentials are azure-identity's
  ``DefaultAzureCredential`` (environment, workload identity, managed identity, Azure CLI,
  Azure PowerShell, Azure Developer CLI), made per process and never stored. Every request has
  short connection and read timeouts and a bounded number of retries (:class:`Timeouts`), so an
  unreachable service is an error in seconds, not the transport's default 300 s per attempt.
- :func:`azure_errors`: turns what azure-core, azure-identity and azure-ai-ml raise into a
  :class:`~himl_manifest.errors.StoreError` (or :class:`~himl_manifest.errors.ConfigError`) that
  says what failed and what to do; never a traceback.

azure-ai-ml and azure-identity are imported here lazily (inside functions); without the
``azure`` extra, :func:`require_sdk` raises :class:`~himl_manifest.errors.BackendUnavailable`
with the install hint.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himl_manifest.errors import BackendUnavailable, ConfigError, HimlError, StoreError

CONFIG_FILE = "config.json"
ENV_SUBSCRIPTION = "AZUREML_SUBSCRIPTION_ID"
ENV_RESOURCE_GROUP = "AZUREML_RESOURCE_GROUP"
ENV_WORKSPACE = "AZUREML_WORKSPACE_NAME"
INSTALL_HINT = "pip install 'himl-manifest[azure]'"
#: What to tell a user whose credentials did not work.
LOGIN_HINT = (
    "sign in with `az login` (or `az login --tenant <tenant>`), or set AZURE_CLIENT_ID, "
    "AZURE_TENANT_ID and AZURE_CLIENT_SECRET for a service principal"
)


@dataclass(frozen=True)
class Workspace:
    """Where the runs live: one Azure ML workspace, and where we learnt of it."""

    subscription_id: str
    resource_group: str
    workspace_name: str
    source: str = ""

    def __str__(self) -> str:
        return f"{self.workspace_name} (resource group {self.resource_group})"


#: Environment variable: seconds between two polls of a job that is waited for.
ENV_POLL = "HIML_AZUREML_POLL_S"
#: The default: a job's state changes in minutes, not seconds.
DEFAULT_POLL_S = 30.0


def poll_interval(environ: Mapping[str, str] | None = None) -> float:
    """Seconds between polls of a job waited for: ``HIML_AZUREML_POLL_S``, else 30."""
    value = (os.environ if environ is None else environ).get(ENV_POLL, "").strip()
    if not value:
        return DEFAULT_POLL_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise ConfigError(f"{ENV_POLL}={value!r}: expected a number of seconds between 0 and 3600")
    return seconds


#: Environment variable: the overall deadline of one request to Azure ML, in seconds.
ENV_TIMEOUT = "HIML_AZUREML_TIMEOUT"
#: The default deadline of one request, retries included.
DEFAULT_DEADLINE_S = 30.0


@dataclass(frozen=True)
class Timeouts:
    """Our own limits on every request to Azure (azure-core's transport and retry policy).

    ``deadline_s`` bounds one call as a whole, its retries included (azure-core's retry
    ``timeout``): a service that accepts the connection and never answers is an error after
    about that long, not after the transport's 300 s per attempt times its retries. A read
    waits at most that long too."""

    #: Seconds to open a connection (the transport's default is 300).
    connect_s: float = 10.0
    #: Seconds one call may take, retries included.
    deadline_s: float = DEFAULT_DEADLINE_S
    #: Retries of a request azure-core may retry (429, 500, 503, dropped connections).
    retries: int = 3

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Timeouts:
        """The defaults, with the deadline from ``HIML_AZUREML_TIMEOUT`` when it is set."""
        value = (os.environ if environ is None else environ).get(ENV_TIMEOUT, "").strip()
        if not value:
            return cls()
        try:
            deadline = float(value)
        except ValueError:
            deadline = -1.0
        if not 0 < deadline <= 3600:
            raise ConfigError(
                f"{ENV_TIMEOUT}={value!r}: expected a number of seconds between 0 and 3600"
            )
        return cls(connect_s=min(cls.connect_s, deadline), deadline_s=deadline)

    def client_kwargs(self) -> dict[str, Any]:
        return {
            "connection_timeout": self.connect_s,
            "read_timeout": self.deadline_s,
            "timeout": self.deadline_s,
            "retry_total": self.retries,
            "retry_connect": self.retries,
            "retry_read": self.retries,
            "retry_status": self.retries,
        }


def require_sdk() -> None:
    """Raise :class:`BackendUnavailable` unless azure-ai-ml and azure-identity are installed."""
    try:
        import azure.ai.ml
        import azure.identity  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"the Azure ML backend needs the azure extra ({exc.name or exc} is missing): "
            f"{INSTALL_HINT}"
        ) from None


# --- which workspace ---------------------------------------------------------------------------


def find_workspace(
    root: Path,
    config: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Workspace:
    """The workspace of the project at ``root`` (see the module's docstring for the order)."""
    env = os.environ if environ is None else environ
    if config is not None:
        path = Path(config)
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise ConfigError(f"workspace config {path} does not exist")
        return read_config(path)
    values = [
        env.get(key, "").strip() for key in (ENV_SUBSCRIPTION, ENV_RESOURCE_GROUP, ENV_WORKSPACE)
    ]
    if all(values):
        return Workspace(values[0], values[1], values[2], source="environment")
    if any(values):
        missing = [
            key
            for key, value in zip(
                (ENV_SUBSCRIPTION, ENV_RESOURCE_GROUP, ENV_WORKSPACE), values, strict=True
            )
            if not value
        ]
        raise ConfigError(f"incomplete workspace in the environment: {', '.join(missing)} unset")
    folder = root.resolve()
    while True:
        candidate = folder / CONFIG_FILE
        if candidate.is_file():
            return read_config(candidate)
        if folder.parent == folder:
            break
        folder = folder.parent
    raise ConfigError(
        f"no Azure ML workspace found: no {CONFIG_FILE} in {root.resolve()} or above it. "
        f"Download config.json from the workspace's page in Azure ML Studio into the project, "
        f"name one with compute.workspace_config, or set {ENV_SUBSCRIPTION}, "
        f"{ENV_RESOURCE_GROUP} and {ENV_WORKSPACE}"
    )


def read_config(path: Path) -> Workspace:
    """A workspace ``config.json``: ``subscription_id``, ``resource_group``,
    ``workspace_name`` (the file Azure ML Studio downloads)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable workspace config: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a workspace config must be a JSON object")
    keys = ("subscription_id", "resource_group", "workspace_name")
    missing = [key for key in keys if not isinstance(data.get(key), str) or not data[key].strip()]
    if missing:
        raise ConfigError(f"{path}: missing {', '.join(missing)}")
    sub, group, name = (str(data[key]).strip() for key in keys)
    return Workspace(sub, group, name, source=str(path))


# --- the client --------------------------------------------------------------------------------


def default_credential() -> Any:
    """azure-identity's default chain, without the interactive browser (apply may run in CI),
    behind :class:`CachedCredential`: one token per scope per process."""
    require_sdk()
    from azure.identity import DefaultAzureCredential

    return CachedCredential(DefaultAzureCredential(exclude_interactive_browser_credential=True))


class CachedCredential:
    """A credential that asks the one it wraps once per scope, and again only when the token
    is about to expire. Each client of the SDK has its own token policy (jobs, environments,
    codes, run history, ...): without this, every one of them runs the credential chain (an
    `az` process for a CLI login) on its first request."""

    #: Seconds before expiry at which a token is renewed.
    MARGIN_S = 300

    def __init__(self, inner: Any) -> None:
        import threading

        self.inner = inner
        self._tokens: dict[tuple[Any, ...], Any] = {}
        self._lock = threading.Lock()

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        import time

        key = (scopes, kwargs.get("claims"), kwargs.get("tenant_id"))
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.expires_on - self.MARGIN_S <= time.time():
                token = self.inner.get_token(*scopes, **kwargs)
                self._tokens[key] = token
            return token

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if callable(close):
            close()


def quiet_sdk_logs() -> None:
    """azure-ai-ml logs notices (experimental classes, studio URLs) on stderr: keep errors."""
    for name in ("azure.ai.ml", "azure.identity", "azure.core.pipeline.policies"):
        logging.getLogger(name).setLevel(logging.ERROR)


def ml_client(
    workspace: Workspace,
    *,
    credential: Any = None,
    timeouts: Timeouts | None = None,
    **client_kwargs: Any,
) -> Any:
    """An ``MLClient`` over ``workspace`` (no network call is made here). ``client_kwargs``
    reach azure-core's transport (e.g. ``connection_verify``: a CA bundle)."""
    require_sdk()
    quiet_sdk_logs()
    from azure.ai.ml import MLClient

    return MLClient(
        credential if credential is not None else default_credential(),
        workspace.subscription_id,
        workspace.resource_group,
        workspace.workspace_name,
        **{**(timeouts or Timeouts.from_environment()).client_kwargs(), **client_kwargs},
    )


# --- errors ----------------------------------------------------------------------------------


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an azure-core error (None: no answer came)."""
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def service_message(exc: BaseException) -> str:
    """What the service said: its error code and message, else the exception's first line."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    message = getattr(error, "message", None)
    if message:
        return f"{code}: {message}" if code else str(message)
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def not_found(exc: BaseException) -> bool:
    """Whether ``exc`` says a resource does not exist: a 404, or azure-ai-ml's own wrapping
    of one (``data.get(name, label="latest")`` raises an ``MlException`` around it)."""
    from azure.core.exceptions import ResourceNotFoundError

    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, ResourceNotFoundError) or status_of(current) == 404:
            return True
        current = current.__cause__ or current.__context__
        seen += 1
    return False


def is_already_exists(exc: BaseException) -> bool:
    """A job PUT refused because the name is taken (409, or the service's 400 message)."""
    try:
        from azure.core.exceptions import ResourceExistsError
    except ImportError:  # pragma: no cover - the SDK is there whenever this is called
        return False
    if isinstance(exc, ResourceExistsError) or status_of(exc) == 409:
        return True
    return status_of(exc) == 400 and "already exists" in str(exc).lower()


def translate(exc: BaseException, doing: str, workspace: Workspace | None = None) -> HimlError:
    """An exception of the Azure SDK -> our error, with what to do about it."""
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
        ServiceResponseTimeoutError,
    )

    where = f"Azure ML workspace {workspace}" if workspace else "Azure ML"
    status = status_of(exc)
    if isinstance(exc, ClientAuthenticationError) and status is None:
        # the credential chain itself failed: its message lists every credential it tried
        tried = str(exc).strip()
        return StoreError(
            f"{doing}: could not get Azure credentials for {where}. {LOGIN_HINT}.\n{tried}"
        )
    if status == 401:
        return StoreError(
            f"{doing}: {where} refused our credentials (401 {service_message(exc)}); {LOGIN_HINT}"
        )
    if status == 403:
        return StoreError(
            f"{doing}: access denied to {where} (403 {service_message(exc)}): your identity "
            "needs a role on the workspace such as 'AzureML Data Scientist'"
        )
    if status == 404:
        return StoreError(f"{doing}: not found in {where} (404 {service_message(exc)})")
    if status == 429:
        return StoreError(
            f"{doing}: {where} is throttling requests (429 {service_message(exc)}), "
            "still after retries; try again in a minute"
        )
    if isinstance(exc, HttpResponseError) and status is not None:
        return StoreError(f"{doing}: {where} answered {status}: {service_message(exc)}")
    if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseTimeoutError)):
        what = (
            "did not accept the connection"
            if isinstance(exc, ServiceRequestError)
            else ("did not answer")
        )
        return StoreError(
            f"{doing}: timed out: {where} {what} within the deadline of one call "
            f"({ENV_TIMEOUT}, default {DEFAULT_DEADLINE_S:g} s); the service may be slow or "
            "hung: try again later"
        )
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return StoreError(
            f"{doing}: could not reach {where} ({type(exc).__name__}: {service_message(exc)}); "
            "check the network (proxy, VPN, firewall) and that the workspace exists"
        )
    if isinstance(exc, ClientAuthenticationError):
        return StoreError(f"{doing}: authentication failed for {where}: {exc}. {LOGIN_HINT}")
    if isinstance(exc, HttpResponseError):
        return StoreError(f"{doing}: {where}: {service_message(exc)}")
    try:
        from azure.ai.ml.exceptions import MlException, ValidationException
    except ImportError:  # pragma: no cover
        MlException = ValidationException = ()  # type: ignore[misc,assignment]
    if isinstance(exc, ValidationException):
        return ConfigError(f"{doing}: Azure ML refused the job: {_first_line(exc)}")
    if isinstance(exc, MlException):
        return StoreError(f"{doing}: {_first_line(exc)}")
    return StoreError(f"{doing}: {type(exc).__name__}: {exc}")


_ANSI = re.compile(r"\x1b\[[0-9;]*m|\[[0-9;]*m")


def _first_line(exc: BaseException) -> str:
    """The line of an azure-ai-ml error that says what is wrong: its ``(x) ...`` detail when
    it has one (its messages are framed by colour codes, headings and resolutions), else its
    first line that is not a heading."""
    text = _ANSI.sub("", str(getattr(exc, "message", None) or exc))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    detail = [line[3:].strip() for line in lines if line.startswith("(x)")]
    useful = [
        line for line in lines if not line.endswith(("invalid", ":")) and not line[0].isdigit()
    ]
    return (detail or useful or lines or [type(exc).__name__])[0]


def is_azure_error(exc: BaseException) -> bool:
    """Whether ``exc`` comes from azure-core or azure-ai-ml (and is ours to translate)."""
    module = type(exc).__module__ or ""
    return module.startswith("azure.")


@contextmanager
def azure_errors(doing: str, workspace: Workspace | None = None) -> Iterator[None]:
    """Run a block of Azure calls; its Azure errors become our errors (the cause kept)."""
    try:
        yield
    except HimlError:
        raise
    except Exception as exc:
        if not is_azure_error(exc):
            raise
        raise translate(exc, doing, workspace) from exc


def mlflow_tracking_uri(root: Path, config: str | Path | None = None) -> str:
    """The MLflow tracking URI of the project's workspace (what ``--log_from_vm`` records
    into). Raises when there is no workspace, it cannot be reached, or MLflow's azureml://
    plugin (azureml-mlflow) is missing, before a run starts."""
    import importlib.util

    from himl_manifest.errors import BackendUnavailable, StoreError

    require_sdk()
    try:
        plugin = importlib.util.find_spec("azureml.mlflow")  # MLflow's azureml:// plugin
    except ImportError:
        plugin = None
    if plugin is None:
        raise BackendUnavailable(
            "--log_from_vm needs azureml-mlflow (MLflow's plugin for azureml:// tracking "
            "URIs): pip install 'himl-manifest[azure]'"
        )
    workspace = find_workspace(root, config)
    with azure_errors(f"reading the tracking URI of workspace {workspace}", workspace):
        found = ml_client(workspace).workspaces.get(workspace.workspace_name)
    uri = str(getattr(found, "mlflow_tracking_uri", "") or "")
    if not uri:
        raise StoreError(f"workspace {workspace} has no MLflow tracking URI")
    return uri
