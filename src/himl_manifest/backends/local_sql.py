"""A fast, read-only bulk read of the managed runs of an MLflow SQLite store, without MLflow.

MLflow's paginated ``search_runs`` takes seconds for 10,000 runs (and importing MLflow takes
seconds more). :func:`read_managed_runs` reads the same runs straight from MLflow's schema
with the standard library's ``sqlite3`` (no SQLAlchemy either) in three queries, whatever the
number of runs: the managed runs (tag ``himl.managed = true``, in an experiment tagged the same,
any lifecycle stage), all their tags, and their latest metrics. It returns light objects shaped
like MLflow's ``Run`` (``info`` and ``data``), in ``search_runs``' order, so
:func:`.local_store.to_record` turns them into exactly the same RunRecords.

With ``full=False`` the history runs (superseded, archived or deleted: the planner only needs
their name, attempt and state) are read without their spec, metrics, provenance and other big
tags, so a store of mostly history costs little more to plan against than its live runs.

It never writes (the file is opened in SQLite's read-only mode) and returns None, meaning
"use ``search_runs``", when the file does not exist, is not an initialized MLflow store, or
cannot be read with this schema: the MLflow path then raises its usual StoreError if the file
is damaged.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from himl_manifest.model import Lifecycle
from himl_manifest.records import (
    TAG_APPLY_ID,
    TAG_ATTEMPT,
    TAG_CHECKPOINTS,
    TAG_EXPERIMENT,
    TAG_FOLD,
    TAG_HOST,
    TAG_MANAGED,
    TAG_OUTPUT_DIR,
    TAG_PID,
    TAG_RUN_NAME,
    TAG_SEED,
    TAG_SPEC_HASH,
    TAG_STATE,
)

#: The lifecycle stages ``search_runs`` returns with ``ViewType.ALL``.
ALL_STAGES = ("active", "deleted")

#: The tags a history record (superseded, archived or deleted) is read with when
#: :func:`read_managed_runs` is asked for a light read (``full=False``): what the planner needs of
#: it (name, attempt, identity, state, the checkpoints the store records) and what the liveness
#: check reads. Not its spec, metrics, provenance, user tags or error: the big values, which
#: history never needs for a plan.
LIGHT_TAGS = (
    TAG_RUN_NAME,
    TAG_EXPERIMENT,
    TAG_SEED,
    TAG_FOLD,
    TAG_SPEC_HASH,
    TAG_ATTEMPT,
    TAG_STATE,
    TAG_OUTPUT_DIR,
    TAG_PID,
    TAG_HOST,
    TAG_APPLY_ID,
    TAG_CHECKPOINTS,
)
_STAGES = ", ".join(f"'{s}'" for s in ALL_STAGES)
_HISTORY_STATES = f"'{Lifecycle.SUPERSEDED.value}', '{Lifecycle.ARCHIVED.value}'"

#: The managed runs, in ``search_runs``' order (newest first, then by id), each with a flag
#: saying whether it is live (not deleted, not superseded or archived).
MANAGED_RUNS = f"""
SELECT r.run_uuid, r.status, r.start_time, r.end_time, r.lifecycle_stage,
       r.lifecycle_stage = 'active' AND COALESCE(s.value, '') NOT IN ({_HISTORY_STATES}) AS live
FROM runs AS r
JOIN experiment_tags AS et
  ON et.experiment_id = r.experiment_id AND et.key = '{TAG_MANAGED}' AND et.value = 'true'
JOIN tags AS t
  ON t.run_uuid = r.run_uuid AND t.key = '{TAG_MANAGED}' AND t.value = 'true'
LEFT JOIN tags AS s
  ON s.run_uuid = r.run_uuid AND s.key = '{TAG_STATE}'
LEFT JOIN tags AS n
  ON n.run_uuid = r.run_uuid AND n.key = '{TAG_RUN_NAME}'
WHERE r.lifecycle_stage IN ({_STAGES})
  AND (?1 IS NULL
       OR (r.lifecycle_stage = 'active' AND COALESCE(s.value, '') NOT IN ({_HISTORY_STATES}))
       OR n.value IN (SELECT value FROM json_each(?1)))
ORDER BY r.start_time DESC, r.run_uuid
"""

#: Every tag of the runs ``?1`` (a JSON list of ids: the live runs, or all of them when
#: ``full``), and the :data:`LIGHT_TAGS` of the runs ``?2`` (the history runs read light), by
#: the run_uuid index: only the runs asked for are touched.
TAGS = f"""
SELECT run_uuid, key, value FROM tags
WHERE run_uuid IN (SELECT value FROM json_each(?1))
UNION ALL
SELECT run_uuid, key, value FROM tags
WHERE run_uuid IN (SELECT value FROM json_each(?2))
  AND key IN ({", ".join(f"'{key}'" for key in LIGHT_TAGS)})
"""
#: The latest metrics of the runs ``?1`` (a JSON list of ids).
LATEST_METRICS = """
SELECT run_uuid, key, value, is_nan FROM latest_metrics
WHERE run_uuid IN (SELECT value FROM json_each(?1))
"""
#: The number of queries of one :func:`read_managed_runs` (plus one schema check).
QUERIES = 3
#: Statements executed by :func:`read_managed_runs` so far (for tests).
executed = 0

REQUIRED_TABLES = ("runs", "tags", "latest_metrics", "experiment_tags")


@dataclass
class RunInfo:
    """The fields of MLflow's ``RunInfo`` that :func:`.local_store.to_record` reads."""

    run_id: str
    status: str
    start_time: int | None
    end_time: int | None
    lifecycle_stage: str


@dataclass
class RunData:
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Run:
    """A managed run as :func:`read_managed_runs` reads it (MLflow ``Run``-shaped).

    ``light``: a history run (superseded, archived or deleted) read with ``full=False``: only
    its :data:`LIGHT_TAGS`, no metrics (:func:`.local_store.to_record` makes a light record)."""

    info: RunInfo
    data: RunData
    light: bool = False


def read_only_uri(db: Path) -> str:
    """An SQLite URI opening ``db`` in read-only mode (never creates it)."""
    return f"{db.resolve().as_uri()}?mode=ro"


def read_managed_runs(
    db: Path, full: bool = True, history_of: Collection[str] | None = None
) -> list[Run] | None:
    """Every managed run of the MLflow SQLite store ``db``; None: use ``search_runs`` instead.

    ``full=False`` reads history runs (superseded, archived, deleted) light: only the tags a
    plan needs of them (:data:`LIGHT_TAGS`), no metrics; live runs are read whole either way.
    ``history_of``: read only the history runs with these run names (what a plan needs of
    history: the attempts of the runs it may submit); live runs are all read."""
    if not db.is_file():
        return None
    try:
        connection = sqlite3.connect(read_only_uri(db), uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        return _read(connection, full, history_of)
    except sqlite3.Error:
        return None
    finally:
        connection.close()


def _execute(connection: sqlite3.Connection, query: str, *args: object) -> sqlite3.Cursor:
    global executed
    executed += 1
    return connection.execute(query, args)


def _read(
    connection: sqlite3.Connection, full: bool, history_of: Collection[str] | None
) -> list[Run] | None:
    found = _execute(connection, "SELECT name FROM sqlite_master WHERE type = 'table'")
    if not {row[0] for row in found}.issuperset(REQUIRED_TABLES):
        return None  # an empty or new store: MLflow initializes it
    runs: dict[str, Run] = {}
    names = None if history_of is None else json.dumps(sorted(history_of))
    for run_id, status, start, end, stage, live in _execute(connection, MANAGED_RUNS, names):
        runs[run_id] = Run(
            RunInfo(run_id, status, start, end, stage), RunData(), light=not (full or live)
        )
    if not runs:
        return []
    whole = json.dumps([run_id for run_id, run in runs.items() if not run.light])
    light = json.dumps([run_id for run_id, run in runs.items() if run.light])
    for run_id, key, value in _execute(connection, TAGS, whole, light):
        run = runs.get(run_id)
        if run is not None:
            run.data.tags[key] = value
    for run_id, key, value, is_nan in _execute(connection, LATEST_METRICS, whole):
        runs[run_id].data.metrics[key] = math.nan if is_nan else value
    return list(runs.values())
