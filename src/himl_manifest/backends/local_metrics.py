"""Metric histories of many runs at once: one SQL read of MLflow's ``metrics`` table.

``himl report`` needs every logged value of every metric of every current run (the best and
last value of each, and the per-epoch curves it plots). MLflow's client offers one
``get_metric_history(run, key)`` call per run and metric: 500 runs x 10 metrics is 5,000
queries. :func:`read_histories` reads the same rows straight from an MLflow SQLite store with
the standard library's ``sqlite3`` in one query (by the ``run_uuid`` index), whatever the
number of runs; :func:`client_histories` is the MLflow-client path for any other tracking URI
(a tracking server, an Azure ML workspace), one request per run and metric.

Both return ``{run_id: {metric: [(step, value), ...]}}``, each history ordered by step, then by
the time it was logged (a NaN value is ``math.nan``); every requested run has an entry, empty
when it logged nothing or the store does not hold it.
"""

from __future__ import annotations

import itertools
import json
import math
import sqlite3
from collections.abc import Collection
from pathlib import Path
from typing import Any

from himl_manifest.backends.base import MetricHistories
from himl_manifest.backends.local_sql import read_only_uri

#: Every logged value of the runs ``?1`` (a JSON list of run ids), one row per (run, metric)
#: with its steps and values as two JSON arrays (a NaN value as null). SQLite aggregates the
#: rows in the order it reads them, here the (run_uuid, key, step) index: by step, then in
#: the order they were written; :func:`read_histories` sorts any history that is not.
#: Aggregating in SQLite hands Python 1 row per metric instead of 1 per value (~3x faster).
HISTORIES = """
SELECT run_uuid, key,
       json_group_array(step),
       json_group_array(CASE WHEN is_nan THEN NULL ELSE value END)
FROM metrics
WHERE run_uuid IN (SELECT value FROM json_each(?1))
GROUP BY run_uuid, key
"""
#: Statements executed by :func:`read_histories` so far (for tests: one per call).
executed = 0


def empty(run_ids: Collection[str]) -> MetricHistories:
    """An entry per run id, each without metrics."""
    return {run_id: {} for run_id in run_ids}


def read_histories(db: Path, run_ids: Collection[str]) -> MetricHistories | None:
    """The histories of ``run_ids`` in the MLflow SQLite store ``db``, in one query.

    None when the file is missing or cannot be read with this schema (the caller then reads
    through MLflow's client, which reports a damaged store as usual)."""
    global executed
    if not db.is_file():
        return None
    histories = empty(run_ids)
    if not histories:
        return histories
    try:
        connection = sqlite3.connect(read_only_uri(db), uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        executed += 1
        rows = connection.execute(HISTORIES, (json.dumps(sorted(histories)),)).fetchall()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    loads = json.loads
    for run_id, key, steps_json, values_json in rows:
        steps: list[int] = loads(steps_json)
        values: list[float | None] = loads(values_json)
        points = list(zip(steps, values, strict=True))
        if None in values:
            points = [(step, math.nan if value is None else value) for step, value in points]
        if any(later < earlier for earlier, later in itertools.pairwise(steps)):
            points.sort(key=lambda point: point[0])  # stable: the write order within a step
        histories[run_id][key] = points  # type: ignore[assignment]
    return histories


def client_histories(client: Any, run_ids: Collection[str]) -> MetricHistories:
    """The histories of ``run_ids`` through an ``MlflowClient``: its metric keys from
    ``get_run``, then one ``get_metric_history`` per metric (MLflow's REST API has no bulk
    history read). A run the store does not hold gets an empty entry."""
    histories = empty(run_ids)
    for run_id in histories:
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or (
                "not found" in str(exc).lower()
            ):
                continue
            raise
        for key in sorted(run.data.metrics):
            found = client.get_metric_history(run_id, key)
            ordered = sorted(found, key=lambda m: (m.step, m.timestamp))
            histories[run_id][key] = [(int(m.step), float(m.value)) for m in ordered]
    return histories
