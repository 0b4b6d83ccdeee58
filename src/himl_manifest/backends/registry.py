"""Backends by name. ``local`` (MLflow store + local processes) is what users get; ``memory``
(state that dies with the process) is registered for tests and demos and is not offered in the
CLI's help. A backend is added here once it exists, and only then offered.

Each backend module is imported only when it is opened, so naming a backend costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from himl_manifest.backends.base import Backend
from himl_manifest.errors import ConfigError

#: The backends the CLI offers users.
BACKENDS = ("local",)
#: Backends accepted but not offered (tests and demos).
HIDDEN_BACKENDS = ("memory",)


def open_backend(
    name: str = "local",
    *,
    tracking_uri: str | None = None,
    root: Path | None = None,
    jobs: int = 1,
) -> Backend:
    """Open the backend called ``name``; the run store is reached (and checked) at once.

    ``jobs``: how many runs an executor that runs them here may run at once."""
    if name == "local":
        from himl_manifest.backends.local import LocalBackend

        return LocalBackend(tracking_uri, root, jobs=jobs)
    if name == "memory":
        from himl_manifest.backends.memory import MemoryBackend

        return MemoryBackend()
    raise ConfigError(f"unknown backend {name!r}: expected one of {', '.join(BACKENDS)}")
