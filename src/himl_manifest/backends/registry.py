"""Executor kinds, and the one place that decides where a run executes.

An **executor kind** (:class:`ExecutorKind`) is a way of running runs: ``local`` (worker
processes here, recorded in the project's MLflow store) and ``azureml`` (jobs on an Azure ML
workspace's compute clusters; today's remote kind). Each kind says which ``compute.target``
values it takes, how to tell whether the project configures it, and how to open its backend.
What it can do is its backend's :class:`~.base.Capabilities` (multi-node, waits here, fetches
logs), which plan and apply consult through :meth:`~.base.Backend.capabilities_of`. Adding a
kind is one :func:`register` call; nothing else names it.

:func:`placement` is where a run executes: the first kind, in registration order, that claims
its ``compute.target`` (``local`` claims ``local``; the remote kind claims every other name,
each a cluster of its workspace: the kind that claims "every other target").

Backends by name (``--backend``):

- ``auto`` (the default): every registered kind the project configures, behind one
  :class:`~.routed.RoutedBackend` (each run goes to its placement, every plan reads every
  store); a kind that is not configured is named when a run needs it. A project without an
  Azure ML workspace never authenticates anywhere.
- ``local``, ``azureml`` (any registered kind): that kind alone.
- ``memory``: registered for tests and demos, not offered in the CLI's help (its state would die
  with the process).

Each backend module is imported only when it is opened, so naming a kind costs nothing, and the
Azure SDK is imported only when a workspace is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from himl_manifest.backends.base import Backend
from himl_manifest.errors import ConfigError
from himl_manifest.paths import project_root
from himl_manifest.spec import RunSpec

LOCAL = "local"
AZUREML = "azureml"
#: ``compute.target`` of a run that executes here.
LOCAL_TARGET = "local"


@dataclass(frozen=True)
class OpenOptions:
    """What opening a backend may be given: the local store's tracking URI and how many runs
    an executor that runs them here may run at once."""

    tracking_uri: str | None = None
    jobs: int = 1
    #: The workspace configuration file of the remote kind (``--workspace_config_path``);
    #: None: found upward from the project root.
    workspace_config: str | None = None


@dataclass(frozen=True)
class ExecutorKind:
    """One way of running runs."""

    name: str
    #: Whether runs with a ``compute.target`` execute on this kind; None: every target no
    #: other kind claims (the remote kind of this version: each name a cluster).
    claims: Callable[[str], bool] | None
    #: Its backend for the project at a root.
    open: Callable[[Path, OpenOptions], Backend]
    #: None when the project at a root configures this kind, else why not.
    configured: Callable[[Path], str | None] = lambda _root: None
    #: What a ``compute.target`` of this kind is, for messages ("an Azure ML compute cluster").
    target_words: str = "a target"


EXECUTORS: dict[str, ExecutorKind] = {}
#: Backends accepted by name besides the executor kinds and ``auto`` (tests and demos).
HIDDEN_BACKENDS = ("memory",)


def register(kind: ExecutorKind) -> None:
    """Make ``kind`` an executor kind: placed, opened by ``auto`` and by its name."""
    EXECUTORS[kind.name] = kind


def backends() -> tuple[str, ...]:
    """The backends the CLI offers users: ``auto`` and every executor kind."""
    return ("auto", *EXECUTORS)


def target_of(run: RunSpec) -> str:
    """A run's ``compute.target`` (``local`` when it names none)."""
    compute = run.spec.get("compute") or {}
    return str(compute.get("target", LOCAL_TARGET))


def placement(run: RunSpec) -> str:
    """The executor kind ``run`` executes on: the first registered kind that claims its
    ``compute.target``."""
    target = target_of(run)
    for kind in EXECUTORS.values():
        if kind.claims is not None and kind.claims(target):
            return kind.name
    for kind in EXECUTORS.values():
        if kind.claims is None:
            return kind.name
    raise ConfigError(f"{run.run_name}: no executor takes compute.target {target!r}")


def open_backend(
    name: str = "auto",
    *,
    tracking_uri: str | None = None,
    root: Path | None = None,
    jobs: int = 1,
    workspace_config: str | None = None,
) -> Backend:
    """Open the backend called ``name``; the run store is reached (and checked) at once.

    ``jobs``: how many runs an executor that runs them here may run at once;
    ``workspace_config``: the remote kind's configuration file (else found upward)."""
    root = (root or project_root()).resolve()
    options = OpenOptions(tracking_uri, jobs, workspace_config)
    if name == "auto":
        return open_routed(root, options)
    if name in EXECUTORS:  # named: opened whatever `configured` says (it says why it cannot)
        return EXECUTORS[name].open(root, options)
    if name == "memory":
        from himl_manifest.backends.memory import MemoryBackend

        return MemoryBackend()
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(backends())}")


def open_routed(root: Path, options: OpenOptions | None = None) -> Backend:
    """Every executor kind the project configures, each run routed by :func:`placement`."""
    from himl_manifest.backends.routed import RoutedBackend

    options = options or OpenOptions()
    opened: dict[str, Backend] = {}
    missing: dict[str, str] = {}
    for kind in EXECUTORS.values():
        why_not = kind.configured(root)
        if why_not is None:
            opened[kind.name] = kind.open(root, options)
        else:
            missing[kind.name] = why_not
    return RoutedBackend(opened, route_of=placement, missing=missing)


# --- the kinds of this version ---------------------------------------------------------------


def _open_local(root: Path, options: OpenOptions) -> Backend:
    from himl_manifest.backends.local import LocalBackend

    return LocalBackend(options.tracking_uri, root, jobs=options.jobs)


def workspace_configured(root: Path) -> str | None:
    """None when the project at ``root`` configures an Azure ML workspace, else why not."""
    from himl_manifest.backends.azureml.workspace import find_workspace

    try:
        find_workspace(root)
    except ConfigError as exc:
        return str(exc)
    return None


def open_azureml(root: Path, options: OpenOptions | None = None) -> Backend:
    """The Azure ML backend of the project's workspace (the azure extra must be installed)."""
    from himl_manifest.backends.azureml.store import AzureMLBackend
    from himl_manifest.backends.azureml.workspace import require_sdk

    require_sdk()
    return AzureMLBackend.open(root, config=(options or OpenOptions()).workspace_config)


def remote_tracking_uri(root: Path, config: str | None = None) -> str:
    """The MLflow tracking URI of the project's Azure ML workspace (``--log_from_vm``)."""
    from himl_manifest.backends.azureml.workspace import mlflow_tracking_uri

    return mlflow_tracking_uri(root, config)


register(
    ExecutorKind(
        LOCAL,
        claims=lambda target: target == LOCAL_TARGET,
        open=_open_local,
        target_words="this machine",
    )
)
register(
    ExecutorKind(
        AZUREML,
        claims=None,
        open=open_azureml,
        configured=workspace_configured,
        target_words="an Azure ML compute cluster",
    )
)
