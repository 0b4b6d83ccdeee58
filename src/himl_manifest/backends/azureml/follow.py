"""Following Azure ML runs: a job's log, and the metric histories of jobs.

- :func:`job_log`: ``follow`` streams a job's log until it ends (``jobs.stream``); otherwise an
  ended job's default artifacts are downloaded (``jobs.download``) and its runner's log
  (``outputs/runner.log``) written, else its standard output (``user_logs/std_log*.txt``).
- :func:`metric_histories`: through MLflow's client on the workspace's tracking URI, with
  azureml-mlflow (a job's name is its MLflow run id), MLflow's HTTP retries bounded by our
  timeouts and its errors made ours.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any, Protocol, TextIO

from himl_manifest.backends.azureml.records import JobFacts
from himl_manifest.backends.azureml.workspace import Timeouts, Workspace, azure_errors
from himl_manifest.backends.base import MetricHistories
from himl_manifest.errors import BackendUnavailable, StoreError
from himl_manifest.records import AZUREML_TERMINAL, LOG_FILE, OUTPUTS_DIR


class FollowedBackend(Protocol):
    """What following needs of the Azure ML backend."""

    client: Any
    workspace: Workspace | None
    timeouts: Timeouts

    def _count(self, kind: str) -> None: ...

    def _get(self, job_name: str, doing: str) -> Any | None: ...

    def _where(self) -> str: ...


def metric_histories(backend: FollowedBackend, run_ids: Collection[str]) -> MetricHistories:
    """Through MLflow's client on the workspace's tracking URI (a job's name is its MLflow
    run id): one request per run and metric, MLflow's REST API having no bulk history read.
    Needs azureml-mlflow (MLflow's ``azureml://`` plugin; ``workspaces.get`` hands it the
    client's credential). MLflow's HTTP retries are bounded by our timeouts, and its errors
    become ours."""
    import importlib.util

    from himl_manifest.backends.local_metrics import client_histories, empty

    if not run_ids:
        return empty(run_ids)
    if importlib.util.find_spec("azureml.mlflow") is None:
        raise BackendUnavailable(
            "reading metric histories from Azure ML needs azureml-mlflow (MLflow's plugin "
            "for azureml:// tracking URIs): pip install 'himl-manifest[azure]'"
        )
    doing = "reading metric histories"
    name = backend.workspace.workspace_name if backend.workspace else backend.client.workspace_name
    with azure_errors(doing, backend.workspace):
        try:
            found = backend.client.workspaces.get(name)
        except AttributeError as exc:  # the plugin, on a workspace without a tracking URI
            raise StoreError(f"{doing}: {backend._where()} has no MLflow tracking URI") from exc
    uri = str(getattr(found, "mlflow_tracking_uri", "") or "")
    if not uri:
        raise StoreError(f"{doing}: {backend._where()} has no MLflow tracking URI")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    backend._count("metrics")
    with azure_errors(doing, backend.workspace), _mlflow_http(backend.timeouts):
        try:
            return client_histories(MlflowClient(uri), run_ids)
        except MlflowException as exc:
            message = str(getattr(exc, "message", None) or exc).splitlines()[0]
            raise StoreError(
                f"{doing}: the workspace's MLflow tracking server refused: {message}"
            ) from exc


def job_log(backend: FollowedBackend, job_name: str, *, follow: bool, out: TextIO) -> None:
    """Write the log of job ``job_name`` to ``out``.

    ``follow``: stream it until the job ends (``jobs.stream``, which writes to stdout:
    redirected to ``out``); a job that ends failed is not an error here (its status says
    so). Otherwise, for a job that has ended, its default artifacts are downloaded
    (``jobs.download``, logs and ``outputs/``) and its runner's log (``outputs/runner.log``)
    written, else the job's standard output (``user_logs/std_log*.txt``); a job still
    running has no downloadable logs yet (StoreError: follow it instead)."""
    doing = f"{'streaming' if follow else 'fetching'} the log of Azure ML job {job_name}"
    if follow:
        backend._count("stream")
        with azure_errors(doing, backend.workspace), contextlib.redirect_stdout(out):
            try:
                backend.client.jobs.stream(job_name)
            except Exception as exc:
                if type(exc).__name__ != "JobException" or not _ended(backend, job_name, doing):
                    raise
        return
    job = backend._get(job_name, doing)
    if job is None:
        raise StoreError(f"{doing}: no such job in {backend._where()}")
    facts = JobFacts.of_entity(job)
    word = facts.status
    if word not in AZUREML_TERMINAL:
        where = facts.studio_url
        raise StoreError(
            f"{doing}: the job is {word}; Azure ML hands out its logs once it has ended: "
            "follow it with `himl logs RUN --follow`" + (f", or see {where}" if where else "")
        )
    with tempfile.TemporaryDirectory(prefix="himl-logs-") as folder:
        backend._count("download")
        with azure_errors(doing, backend.workspace):
            backend.client.jobs.download(job_name, download_path=folder, output_name=None)
        files = log_files(Path(folder))
        if not files:
            raise StoreError(f"{doing}: the job's artifacts hold no log file")
        for path in files:
            if len(files) > 1:
                out.write(f"===== {path.relative_to(folder).as_posix()} =====\n")
            out.write(path.read_text(encoding="utf-8", errors="replace"))
        out.flush()


def _ended(backend: FollowedBackend, job_name: str, doing: str) -> bool:
    job = backend._get(job_name, doing)
    word = str(getattr(getattr(job, "status", None), "value", getattr(job, "status", "")))
    return word in AZUREML_TERMINAL


@contextlib.contextmanager
def _mlflow_http(timeouts: Timeouts) -> Iterator[None]:
    """MLflow's HTTP client with our bounds for the time of a read (its own defaults: 7
    retries with a backoff factor of 2, 120 s a request)."""
    import os

    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(timeouts.retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeouts.deadline_s)),
    }
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update({k: v for k, v in wanted.items() if saved[k] is None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def log_files(folder: Path) -> list[Path]:
    """The logs among a job's downloaded artifacts: the runner's (``outputs/runner.log``),
    else the job's standard output and error (``user_logs/std_log*.txt``)."""
    runner = sorted(folder.rglob(f"{OUTPUTS_DIR}/{LOG_FILE}"))
    return runner or sorted(p for p in folder.rglob("std_log*.txt") if p.is_file())
