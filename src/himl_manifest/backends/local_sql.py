"""A fast, read-only bulk read of the managed runs of an MLflow SQLite store, without MLflow.

MLflow's paginated ``search_runs`` takes seconds for 10,000 runs (and importing MLflow takes
seconds more). :func:`read_managed_runs` reads the same runs straight from MLflow's schema
with SQLAlchemy in three queries, whatever the number of runs: the managed runs (tag
``himl.managed = true``, in an experiment tagged the same, any lifecycle stage), all their tags,
and their latest metrics. It returns light objects shaped like MLflow's ``Run`` (``info`` and
``data``), in ``search_runs``' order, so :func:`.local_store.to_record` turns them into exactly
the same RunRecords.

It never writes (the file is opened in SQLite's read-only mode) and returns None, meaning
"use ``search_runs``", when the file does not exist, is not an initialized MLflow store, or
cannot be read with this schema: the MLflow path then raises its usual StoreError if the file
is damaged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from himl_manifest.backends.protocol import TAG_MANAGED

#: The lifecycle stages ``search_runs`` returns with ``ViewType.ALL``.
ALL_STAGES = ("active", "deleted")

#: Ids of the managed runs, in ``search_runs``' order (newest first, then by id).
MANAGED_RUNS = f"""
SELECT r.run_uuid, r.status, r.start_time, r.end_time, r.lifecycle_stage
FROM runs AS r
JOIN experiment_tags AS et
  ON et.experiment_id = r.experiment_id AND et.key = '{TAG_MANAGED}' AND et.value = 'true'
JOIN tags AS t
  ON t.run_uuid = r.run_uuid AND t.key = '{TAG_MANAGED}' AND t.value = 'true'
WHERE r.lifecycle_stage IN ({", ".join(f"'{s}'" for s in ALL_STAGES)})
ORDER BY r.start_time DESC, r.run_uuid
"""

#: The runs of :data:`MANAGED_RUNS`, as a sub-query (for the tags and metrics queries).
MANAGED_IDS = f"""
SELECT r.run_uuid
FROM runs AS r
JOIN experiment_tags AS et
  ON et.experiment_id = r.experiment_id AND et.key = '{TAG_MANAGED}' AND et.value = 'true'
JOIN tags AS t
  ON t.run_uuid = r.run_uuid AND t.key = '{TAG_MANAGED}' AND t.value = 'true'
WHERE r.lifecycle_stage IN ({", ".join(f"'{s}'" for s in ALL_STAGES)})
"""

ALL_TAGS = f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({MANAGED_IDS})"
LATEST_METRICS = (
    f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({MANAGED_IDS})"
)
#: The number of queries of one :func:`read_managed_runs` (plus one schema check).
QUERIES = 3

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
    """A managed run as :func:`read_managed_runs` reads it (MLflow ``Run``-shaped)."""

    info: RunInfo
    data: RunData


def read_only_url(db: Path) -> str:
    """An SQLAlchemy URL opening ``db`` in SQLite's read-only mode (never creates it)."""
    return f"sqlite:///file:{quote(str(db.resolve()))}?mode=ro&uri=true"


def read_managed_runs(db: Path) -> list[Run] | None:
    """Every managed run of the MLflow SQLite store ``db``; None: use ``search_runs`` instead."""
    if not db.is_file():
        return None
    import sqlalchemy
    from sqlalchemy.exc import SQLAlchemyError

    engine = sqlalchemy.create_engine(
        read_only_url(db), poolclass=sqlalchemy.pool.NullPool, connect_args={"timeout": 30}
    )
    try:
        with engine.connect() as connection:
            return _read(connection)
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def _read(connection: Any) -> list[Run] | None:
    from sqlalchemy import text

    names = {
        row[0]
        for row in connection.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'"))
    }
    if not names.issuperset(REQUIRED_TABLES):
        return None  # an empty or new store: MLflow initializes it
    runs: dict[str, Run] = {}
    for run_id, status, start, end, stage in connection.execute(text(MANAGED_RUNS)):
        runs[run_id] = Run(RunInfo(run_id, status, start, end, stage), RunData())
    if not runs:
        return []
    for run_id, key, value in connection.execute(text(ALL_TAGS)):
        runs[run_id].data.tags[key] = value
    for run_id, key, value, is_nan in connection.execute(text(LATEST_METRICS)):
        runs[run_id].data.metrics[key] = math.nan if is_nan else value
    return list(runs.values())
