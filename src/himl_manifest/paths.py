"""Where the project's state lives on disk: the project root, the run store, run folders."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the tracking store (MLflow's own).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
#: File name of the local SQLite run store, in the project root.
STORE_FILE = "mlflow.db"


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: cwd) holding ``.git``, else the cwd."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".git").exists():
            return folder
    return Path.cwd().resolve()


def tracking_uri(explicit: str | None = None, root: Path | None = None) -> str:
    """The run store: an explicit URI, else ``$MLFLOW_TRACKING_URI``, else SQLite in the root."""
    if explicit:
        return explicit
    from_env = os.environ.get(TRACKING_URI_ENV)
    if from_env:
        return from_env
    return f"sqlite:///{(root or project_root()) / STORE_FILE}"


def in_azureml() -> bool:
    """True inside an Azure ML job (it sets these variables for every run)."""
    return bool(os.environ.get("AZUREML_RUN_ID") or os.environ.get("AZUREML_ARM_WORKSPACE_NAME"))
