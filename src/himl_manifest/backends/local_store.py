"""The MLflow store: :class:`Store` opens it and reads and writes its runs.

Everything here talks to MLflow through :class:`mlflow.tracking.MlflowClient`, imported lazily.
Every MLflow or SQLAlchemy failure leaves this module as a :class:`~himl_manifest.errors.StoreError`
whose message names the tracking URI (:mod:`.local_uri`); how a managed run maps onto MLflow's
tags, and back onto a record, is :mod:`.local_records`.

Apply's local backend and the runner inside a job both reach MLflow through :class:`Store`, with
the tag names and limits of :mod:`himl_manifest.records`. Tag values are capped at
:data:`~.records.MAX_TAG_VALUE` characters, so the RunSpec JSON is stored in ``himl.spec``
when it fits and otherwise split over
``himl.spec.0``, ``himl.spec.1``, ... with ``himl.spec.parts`` giving the count: every record
still comes back in the one bulk ``search_runs``.
"""

from __future__ import annotations

import functools
import re
import sqlite3
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from himl_manifest.backends.local_uri import (
    check_uri,
    is_busy,
    is_initialized_sqlite,
    is_read_only,
    quiet_mlflow_logs,
    read_only_row,
    retrying,
    sqlite_path,
    store_errors,
)
from himl_manifest.errors import StoreError
from himl_manifest.records import (
    MAX_PARAM_VALUE,
    TAG_DISPLAY_NAME,
    TAG_MANAGED,
    TAG_RUN_NAME,
    cap,
)

#: Page size of bulk searches.
PAGE_SIZE = 1000
#: Metrics per MLflow log_batch call (its limit).
METRICS_PER_BATCH = 1000
#: Experiment tag (on MLflow's Default experiment, id 0) holding the store's identity, made
#: when himl first writes to the store; ``.himl/store_id`` beside it remembers it.
TAG_STORE_ID = "himl.store_id"


class Store:
    """A thin, error-translating wrapper over one MlflowClient.

    The client (and MLflow's import, seconds) is made on first use when the store is an
    initialized SQLite file, whose managed runs :meth:`managed_runs` reads without MLflow;
    otherwise (a new store, another URI) it is made, and the store opened, right away.
    """

    def __init__(self, uri: str) -> None:
        check_uri(uri)
        self.uri = uri
        self.db = sqlite_path(uri)
        self._client: Any = None
        self.fast_reads = 0
        if self.db is None or not is_initialized_sqlite(self.db):
            self._open()
        #: What the SQLite file was when opened: (device, inode), and its store id.
        self.opened = (self.file_identity(), self.store_id())

    # -- identity: the store this command opened is the store it ends with -------------------

    def file_identity(self) -> tuple[int, int] | None:
        """(device, inode) of the SQLite file; None when it is gone (or not SQLite)."""
        if self.db is None:
            return None
        try:
            found = self.db.stat()
        except FileNotFoundError:
            return None
        return (found.st_dev, found.st_ino)

    def store_id(self) -> str | None:
        """The store's identity (the ``himl.store_id`` tag), None before himl first wrote."""
        if self.db is None:
            return None
        query = "SELECT value FROM experiment_tags WHERE key = ? ORDER BY experiment_id LIMIT 1"
        row = read_only_row(self.db, query, TAG_STORE_ID)
        return str(row[0]) if row else None

    def ensure_store_id(self) -> str | None:
        """The store's id, made now (on the Default experiment) if it has none."""
        found = self.store_id()
        if found or self.db is None:
            return found
        import uuid

        new = uuid.uuid4().hex
        with store_errors(self.uri, "recording the store id"):
            retrying(lambda: self.client.set_experiment_tag("0", TAG_STORE_ID, new))
        self.opened = (self.opened[0] or self.file_identity(), new)
        return new

    def check_same(self) -> None:
        """Raise when the SQLite file this store opened vanished or was replaced since."""
        if self.db is None or self.opened[0] is None:
            return
        now = self.file_identity()
        if now is None:
            raise StoreError(
                f"the run store {self.db} vanished while this command was using it: what it "
                "recorded since is lost (restore the file; the next apply retries what is missing)"
            )
        pinned = self.opened[1]
        if now != self.opened[0] or (pinned is not None and self.store_id() != pinned):
            raise StoreError(
                f"the run store {self.db} was replaced by another file while this command was "
                "using it: what it recorded since went to the old file"
            )

    def check_writable(self) -> None:
        """Before a command changes anything: prove the SQLite store can be written (a real
        write, rolled back: permission bits say nothing to root, and a read-only file or
        folder shows only when SQLite writes)."""
        if self.db is None or not self.db.is_file():
            return
        try:
            connection = sqlite3.connect(
                f"{self.db.resolve().as_uri()}?mode=rw", uri=True, timeout=30
            )
        except sqlite3.Error as exc:
            raise StoreError(f"run store {self.uri}: cannot open {self.db}: {exc}") from None
        try:
            connection.isolation_level = None
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE himl_write_probe (x)")
            connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            if is_busy(exc):
                return  # another writer holds it: writable, and the writes will wait
            if is_read_only(exc) or "unable to open" in str(exc):
                raise StoreError(
                    f"the run store {self.db} is read-only (the file or its folder "
                    f"{self.db.parent}): nothing was changed"
                ) from None
            raise StoreError(f"run store {self.uri}: test write failed: {exc}") from None
        finally:
            connection.close()

    def _open(self) -> Any:
        with store_errors(self.uri, "opening the store"):
            from mlflow.tracking import MlflowClient

            quiet_mlflow_logs()  # after the import: importing MLflow sets its loggers up
            client = MlflowClient(tracking_uri=self.uri)
            retrying(lambda: client.search_experiments(max_results=1))
        self._client = client
        return client

    @property
    def client(self) -> Any:
        return self._client if self._client is not None else self._open()

    @client.setter
    def client(self, value: Any) -> None:
        self._client = value

    @property
    def _view_all(self) -> Any:
        from mlflow.entities import ViewType

        return ViewType.ALL

    def managed_runs(
        self, full: bool = True, history_of: Collection[str] | None = None
    ) -> list[Any]:
        """Every managed run, as :meth:`search` gives them: read straight from SQLite when the
        store is an SQLite file (three queries, no MLflow), else (or if that read fails) by
        ``search_runs``. ``full=False``: history runs may come back light (see
        :func:`.local_sql.read_managed_runs`; what a plan needs of them, no more)."""
        if self.db is not None:
            from himl_manifest.backends.local_sql import read_managed_runs

            found = read_managed_runs(self.db, full=full, history_of=history_of)
            if found is not None:
                self.fast_reads += 1
                return found
        return self.search()

    def managed_experiment_ids(self) -> list[str]:
        """Ids of the MLflow experiments that hold managed runs (tagged when first used)."""
        ids: list[str] = []
        token = None
        with store_errors(self.uri, "listing experiments"):
            while True:
                page = retrying(
                    functools.partial(
                        self.client.search_experiments,
                        view_type=self._view_all,
                        filter_string=f"tags.`{TAG_MANAGED}` = 'true'",
                        max_results=PAGE_SIZE,
                        page_token=token,
                    )
                )
                ids.extend(e.experiment_id for e in page)
                token = page.token
                if not token:
                    return ids

    def search(self, extra_filter: str = "") -> list[Any]:
        """Every managed MLflow run (all lifecycle stages), paginated, optionally filtered."""
        ids = self.managed_experiment_ids()
        if not ids:
            return []
        query = f"tags.`{TAG_MANAGED}` = 'true'"
        if extra_filter:
            query += f" and {extra_filter}"
        runs: list[Any] = []
        token = None
        with store_errors(self.uri, "searching runs"):
            while True:
                page = retrying(
                    functools.partial(
                        self.client.search_runs,
                        ids,
                        filter_string=query,
                        run_view_type=self._view_all,
                        max_results=PAGE_SIZE,
                        page_token=token,
                    )
                )
                runs.extend(page)
                token = page.token
                if not token:
                    return runs

    def by_run_name(self, run_name: str) -> list[Any]:
        escaped = run_name.replace("'", "")
        return self.search(f"tags.`{TAG_RUN_NAME}` = '{escaped}'")

    def get(self, run_id: str) -> Any | None:
        with store_errors(self.uri, f"reading run {run_id}"):
            try:
                return retrying(lambda: self.client.get_run(run_id))
            except Exception as exc:
                if "RESOURCE_DOES_NOT_EXIST" in str(exc) or "not found" in str(exc).lower():
                    return None
                raise

    def experiment_id(self, name: str, artifact_root: Path | None = None) -> str:
        """The id of MLflow experiment ``name``, created (and tagged as managed) if needed."""
        with store_errors(self.uri, f"opening experiment {name!r}"):
            found = retrying(lambda: self.client.get_experiment_by_name(name))
            if found is None:
                location = (artifact_root / name).as_uri() if artifact_root else None
                tags = {TAG_MANAGED: "true"}
                try:
                    return str(
                        retrying(lambda: self.client.create_experiment(name, location, tags))
                    )
                except Exception:  # another apply created it at the same moment
                    found = retrying(lambda: self.client.get_experiment_by_name(name))
                    if found is None:
                        raise
            if found.lifecycle_stage == "deleted":
                retrying(lambda: self.client.restore_experiment(found.experiment_id))
            if found.tags.get(TAG_MANAGED) != "true":
                retrying(
                    lambda: self.client.set_experiment_tag(found.experiment_id, TAG_MANAGED, "true")
                )
            return str(found.experiment_id)

    def create_run(self, experiment_id: str, tags: dict[str, str]) -> str:
        with store_errors(self.uri, "creating a run"):
            created = retrying(
                lambda: self.client.create_run(
                    experiment_id, tags=tags, run_name=tags.get(TAG_DISPLAY_NAME)
                )
            )
            run_id = str(created.info.run_id)
            retrying(lambda: self.client.update_run(run_id, status="SCHEDULED"))
            return run_id

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        from mlflow.entities import RunTag

        batch = [RunTag(k, cap(v)) for k, v in tags.items()]
        with store_errors(self.uri, f"tagging run {run_id}"):
            for start in range(0, len(batch), 100):
                log = functools.partial(
                    self.client.log_batch, run_id, tags=batch[start : start + 100], synchronous=True
                )
                retrying(log)

    def delete_tags(self, run_id: str, keys: list[str]) -> None:
        with store_errors(self.uri, f"untagging run {run_id}"):
            for key in keys:
                retrying(functools.partial(self.client.delete_tag, run_id, key))

    def terminate(self, run_id: str, mlflow_status: str) -> None:
        with store_errors(self.uri, f"ending run {run_id}"):
            retrying(lambda: self.client.set_terminated(run_id, status=mlflow_status))

    def mark_running(self, run_id: str) -> None:
        with store_errors(self.uri, f"starting run {run_id}"):
            retrying(lambda: self.client.update_run(run_id, status="RUNNING"))

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> list[str]:
        """Record params (capped); a param already recorded with another value is kept, and
        its name returned (MLflow params are immutable)."""
        from mlflow.entities import Param

        found = self.get(run_id)
        existing: dict[str, str] = dict(found.data.params) if found is not None else {}
        values = {str(k): cap(v, MAX_PARAM_VALUE) for k, v in params.items()}
        batch = [Param(k, v) for k, v in values.items() if existing.get(k, v) == v]
        kept = sorted(k for k, v in values.items() if existing.get(k, v) != v)
        with store_errors(self.uri, f"recording params of run {run_id}"):
            for start in range(0, len(batch), 100):
                chunk = batch[start : start + 100]
                retrying(functools.partial(self.client.log_batch, run_id, params=chunk))
        return kept

    def log_artifact(self, run_id: str, local_file: Path, artifact_dir: str) -> None:
        """Log ``local_file`` as the artifact ``<artifact_dir>/<its name>`` of the run (an
        artifact logged again under the same path replaces the earlier one)."""
        with store_errors(self.uri, f"logging {local_file.name} as an artifact of run {run_id}"):
            retrying(lambda: self.client.log_artifact(run_id, str(local_file), artifact_dir))

    def download_artifact(self, run_id: str, path: str, target: Path) -> Path:
        """Download the artifact ``path`` of the run to ``target``, atomically: a partial
        download never takes the target's name."""
        import tempfile

        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".download-", dir=target.parent) as folder:
            with store_errors(self.uri, f"downloading artifact {path} of run {run_id}"):
                got = Path(self.client.download_artifacts(run_id, path, folder))
            if not got.is_file():
                raise StoreError(f"run store {self.uri}: artifact {path} of {run_id}: not a file")
            got.replace(target)
        return target

    def log_metrics(self, run_id: str, entries: Sequence[tuple[Mapping[str, float], int]]) -> None:
        """Record ``(metrics, step)`` entries, in as few store writes as MLflow allows."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(metric_key(k), float(v), now, step)
            for metrics, step in entries
            for k, v in metrics.items()
        ]
        with store_errors(self.uri, f"recording metrics of run {run_id}"):
            for start in range(0, len(batch), METRICS_PER_BATCH):
                chunk = batch[start : start + METRICS_PER_BATCH]
                retrying(functools.partial(self.client.log_batch, run_id, metrics=chunk))


def metric_key(key: str) -> str:
    """A metric name MLflow accepts (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)


def _quoted(value: str) -> str:
    return value.replace("\\", "").replace("'", "")


def find_any(store: Store, reference: str) -> list[Any]:
    """The MLflow runs ``reference`` names, newest first, managed or not (a one-off
    ``himl-runner`` run too): by himl run name, else MLflow run id, else MLflow run name."""
    from mlflow.entities import ViewType

    with store_errors(store.uri, f"finding run {reference!r}"):
        client = store.client
        experiments = retrying(lambda: client.search_experiments(view_type=ViewType.ALL))
        ids = [e.experiment_id for e in experiments]
        if not ids:
            return []

        def search(filter_string: str) -> list[Any]:
            found: list[Any] = retrying(
                lambda: client.search_runs(
                    ids,
                    filter_string,
                    run_view_type=ViewType.ALL,
                    order_by=["attributes.start_time DESC"],
                )
            )
            return found

        runs = search(f"tags.`{TAG_RUN_NAME}` = '{_quoted(reference)}'")
        if not runs and re.fullmatch(r"[0-9a-f]{32}", reference):
            found = store.get(reference)
            runs = [found] if found is not None else []
        if not runs:
            runs = search(f"attributes.run_name = '{_quoted(reference)}'")
        return runs
