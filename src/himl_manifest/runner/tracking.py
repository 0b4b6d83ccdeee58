"""Recording a run in the MLflow run store: params, per-epoch metrics, tags, final status.

The store is :func:`himl_manifest.paths.tracking_uri` (SQLite ``mlflow.db`` in the project root
unless ``MLFLOW_TRACKING_URI`` or ``--tracking_uri`` says otherwise). ``--tracking_uri=none`` or
``HIML_TRACKING=off`` turns recording off (a GPU machine without MLflow).

When ``MLFLOW_RUN_ID`` is set (apply pre-creates the record and passes its id) the runner logs
into that run and creates no other. The run ends FINISHED on success; on failure FAILED, with
the last lines of the runner log in tag ``himl.error_tail``.

MLflow is imported here only, and only when a run is recorded.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from himl_manifest import paths
from himl_manifest.backends.base import TAG_ERROR, TAG_OUTPUT_DIR, TAG_RUN_NAME
from himl_manifest.errors import StoreError

TRACKING_ENV = "HIML_TRACKING"
RUN_ID_ENV = "MLFLOW_RUN_ID"
_OFF = frozenset({"none", "off", "0", "false", "no"})
_MAX_PARAM = 6000
_MAX_BATCH = 1000  # metrics per MLflow log_batch call
logger = logging.getLogger(__name__)


class Tracker(Protocol):
    run_id: str | None

    def log_metrics(self, entries: Sequence[tuple[Mapping[str, float], int]]) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def finish(self, status: str, error_tail: str = "") -> None: ...


class NullTracker:
    """Records nothing (tracking off, or a DDP process other than rank 0)."""

    run_id: str | None = None

    def log_metrics(self, entries: Sequence[tuple[Mapping[str, float], int]]) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def finish(self, status: str, error_tail: str = "") -> None:
        pass


def resolved_uri(explicit: str | None) -> str | None:
    """The tracking URI to record into, or None when tracking is off."""
    if os.environ.get(TRACKING_ENV, "").strip().lower() in _OFF:
        return None
    if explicit and explicit.strip().lower() in _OFF:
        return None
    return paths.tracking_uri(explicit)


class MlflowTracker:
    """One MLflow run, through ``MlflowClient`` (no global state, no autologging)."""

    def __init__(self, uri: str, experiment: str, display_name: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        existing = os.environ.get(RUN_ID_ENV)
        try:
            if existing:
                self.run_id: str | None = existing
                self.client.get_run(existing)
                self.client.update_run(existing, status="RUNNING")
            else:
                experiment_id = self._experiment_id(experiment)
                run = self.client.create_run(experiment_id, run_name=display_name or None)
                self.run_id = run.info.run_id
        except Exception as exc:
            raise StoreError(f"cannot record the run in {uri}: {exc}") from exc

    def _experiment_id(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:  # created meanwhile by a parallel run
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        assert self.run_id is not None
        existing = self.client.get_run(self.run_id).data.params
        batch = [
            Param(k, str(v)[:_MAX_PARAM])
            for k, v in params.items()
            if k not in existing or existing[k] == str(v)[:_MAX_PARAM]
        ]
        skipped = sorted(k for k, v in params.items() if k in existing and existing[k] != str(v))
        if skipped:
            logger.warning("params already recorded with other values, kept: %s", skipped)
        for start in range(0, len(batch), 100):
            self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, entries: Sequence[tuple[Mapping[str, float], int]]) -> None:
        """Record ``(metrics, step)`` entries, in as few store writes as MLflow allows."""
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        now = int(time.time() * 1000)
        batch = [
            Metric(_metric_key(k), float(v), now, step)
            for metrics, step in entries
            for k, v in metrics.items()
        ]
        for start in range(0, len(batch), _MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=batch[start : start + _MAX_BATCH])

    def set_tags(self, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        if tags and self.run_id is not None:
            batch = [RunTag(k, str(v)[:5000]) for k, v in tags.items()]
            self.client.log_batch(self.run_id, tags=batch)

    def finish(self, status: str, error_tail: str = "") -> None:
        if self.run_id is None:
            return
        if error_tail:
            self.set_tags({TAG_ERROR: error_tail})
        self.client.set_terminated(self.run_id, status)


def _metric_key(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)


def start(
    uri: str | None,
    *,
    experiment: str,
    display_name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    output_dir: Path,
) -> Tracker:
    """A tracker for this run, with its params and tags recorded (NullTracker when off)."""
    if uri is None:
        return NullTracker()
    tracker = MlflowTracker(uri, experiment, display_name)
    all_tags = {TAG_OUTPUT_DIR: str(output_dir), **tags}
    if display_name:
        all_tags["mlflow.runName"] = display_name
    tracker.set_tags(all_tags)
    tracker.log_params(params)
    logger.info("recording run %s in %s", tracker.run_id, uri)
    return tracker


def fail_precreated(uri: str | None, error_tail: str) -> None:
    """Mark the run apply pre-created (``MLFLOW_RUN_ID``) FAILED: the runner failed before it
    could start recording."""
    run_id = os.environ.get(RUN_ID_ENV)
    if uri is None or not run_id:
        return
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        client.set_tag(run_id, TAG_ERROR, error_tail[-5000:])
        client.set_terminated(run_id, "FAILED")
    except Exception as exc:  # the error being reported matters more than this one
        logger.warning("could not mark run %s failed: %s", run_id, exc)


def run_folders(reference: str, uri: str | None) -> list[Path]:
    """Folders of the run ``reference`` (himl run name, MLflow run id or run name), newest
    first: the default way run references in ``--src_checkpoint`` are resolved."""
    if uri is None:
        return []
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not ids:
        return []

    def search(filter_string: str) -> list[Any]:
        found: list[Any] = client.search_runs(
            ids, filter_string, run_view_type=ViewType.ALL, order_by=["attributes.start_time DESC"]
        )
        return found

    runs = search(f"tags.`{TAG_RUN_NAME}` = '{reference}'")
    if not runs and re.fullmatch(r"[0-9a-f]{32}", reference):
        try:
            runs = [client.get_run(reference)]
        except Exception:
            runs = []
    if not runs:
        runs = search(f"attributes.run_name = '{reference}'")
    return [Path(r.data.tags[TAG_OUTPUT_DIR]) for r in runs if TAG_OUTPUT_DIR in r.data.tags]
