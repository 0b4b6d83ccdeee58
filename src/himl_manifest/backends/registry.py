"""Backends by name: ``local`` (MLflow store + local processes), ``memory``, ``azureml``.

Each backend module is imported only when it is opened, so naming a backend costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from himl_manifest.backends.base import Backend
from himl_manifest.errors import BackendUnavailable, ConfigError

#: The backends `--backend` accepts.
BACKENDS = ("local", "memory", "azureml")


def open_backend(
    name: str = "local", *, tracking_uri: str | None = None, root: Path | None = None
) -> Backend:
    """Open the backend called ``name``; the run store is reached (and checked) at once."""
    if name == "local":
        from himl_manifest.backends.local import LocalBackend

        return LocalBackend(tracking_uri, root)
    if name == "memory":
        from himl_manifest.backends.memory import MemoryBackend

        return MemoryBackend()
    if name == "azureml":
        raise BackendUnavailable("Azure ML backend is not available yet")
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
