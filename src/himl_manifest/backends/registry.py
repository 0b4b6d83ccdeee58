"""Backends by name.

- ``auto`` (the default): the local backend (MLflow store + local processes), and, when the
  project configures an Azure ML workspace (``config.json`` upward from the project root, or the
  ``AZUREML_*`` environment variables), the Azure ML backend beside it, behind one
  :class:`~.routed.RoutedBackend`: each run goes where its ``compute.target`` says, and every
  plan reads both stores. A project without a workspace never authenticates anywhere.
- ``local``: the local backend alone (runs on a cluster target are refused).
- ``azureml``: the Azure ML backend alone (the workspace must be configured).
- ``memory``: registered for tests and demos, not offered in the CLI's help (its state would die
  with the process).

Each backend module is imported only when it is opened, so naming a backend costs nothing, and
the Azure SDK is imported only when a workspace is configured.
"""

from __future__ import annotations

from pathlib import Path

from himl_manifest.backends.base import Backend
from himl_manifest.errors import ConfigError
from himl_manifest.paths import project_root

#: The backends the CLI offers users.
BACKENDS = ("auto", "local", "azureml")
#: Backends accepted but not offered (tests and demos).
HIDDEN_BACKENDS = ("memory",)


def open_backend(
    name: str = "auto",
    *,
    tracking_uri: str | None = None,
    root: Path | None = None,
    jobs: int = 1,
) -> Backend:
    """Open the backend called ``name``; the run store is reached (and checked) at once.

    ``jobs``: how many runs an executor that runs them here may run at once."""
    root = (root or project_root()).resolve()
    if name == "local":
        from himl_manifest.backends.local import LocalBackend

        return LocalBackend(tracking_uri, root, jobs=jobs)
    if name == "azureml":
        return open_azureml(root)
    if name == "auto":
        return open_routed(root, tracking_uri=tracking_uri, jobs=jobs)
    if name == "memory":
        from himl_manifest.backends.memory import MemoryBackend

        return MemoryBackend()
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")


def workspace_configured(root: Path) -> str | None:
    """None when the project at ``root`` configures an Azure ML workspace, else why not."""
    from himl_manifest.backends.azureml.workspace import find_workspace

    try:
        find_workspace(root)
    except ConfigError as exc:
        return str(exc)
    return None


def open_azureml(root: Path) -> Backend:
    """The Azure ML backend of the project's workspace (the azure extra must be installed)."""
    from himl_manifest.backends.azureml.store import AzureMLBackend
    from himl_manifest.backends.azureml.workspace import find_workspace, ml_client, require_sdk

    require_sdk()
    workspace = find_workspace(root)
    return AzureMLBackend(ml_client(workspace), root=root, workspace=workspace)


def open_routed(root: Path, *, tracking_uri: str | None = None, jobs: int = 1) -> Backend:
    """The local backend, and the Azure ML one when the project configures a workspace."""
    from himl_manifest.backends.local import LocalBackend
    from himl_manifest.backends.routed import AZUREML, LOCAL, RoutedBackend

    local = LocalBackend(tracking_uri, root, jobs=jobs)
    why_not = workspace_configured(root)
    if why_not is not None:
        return RoutedBackend({LOCAL: local}, missing={AZUREML: why_not})
    return RoutedBackend({LOCAL: local, AZUREML: open_azureml(root)})
