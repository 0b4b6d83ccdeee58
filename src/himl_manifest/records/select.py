"""Choosing among the records of runs: the latest attempt of each run, the attempt a reference
means, the run a run starts from, what a listing returns. Each rule is written once, here."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from himl_manifest.model import Lifecycle, RunRecord, RunStatus, checkpoint_source


def latest_attempts(records: Iterable[RunRecord]) -> dict[str, RunRecord]:
    """Run name -> the record of its highest attempt."""
    latest: dict[str, RunRecord] = {}
    for record in records:
        if record.run_name not in latest or record.attempt > latest[record.run_name].attempt:
            latest[record.run_name] = record
    return latest


def newest(records: Iterable[RunRecord]) -> RunRecord | None:
    """The newest of some records: the highest attempt, then the latest started."""
    return max(records, key=lambda r: (r.attempt, r.start_time or 0.0), default=None)


def chosen_attempt(records: Sequence[RunRecord]) -> RunRecord | None:
    """The attempt a reference to a run means (a checkpoint is read from it, `find_run` returns
    it): its newest completed attempt, else its newest."""
    completed = [r for r in records if r.status == RunStatus.COMPLETED]
    return newest(completed or records)


def named(records: Iterable[RunRecord], reference: str) -> list[RunRecord]:
    """The records a run name or a store's run id names, oldest attempt first."""
    found = [r for r in records if reference in (r.run_name, r.run_id)]
    return sorted(found, key=lambda r: (r.attempt, r.start_time or 0.0))


def upstream_run(spec: Mapping[str, Any]) -> str | None:
    """The run whose checkpoint a run starts from (``checkpoint.source``: a run reference, or
    another experiment's run once expansion resolved it); None for a file, a URL or none."""
    source = checkpoint_source(spec)
    return source.run_name if source is not None else None


def listed(record: RunRecord, history_of: Collection[str] | None) -> bool:
    """Whether ``list_runs(history_of=...)`` returns ``record``: every active record does; a
    history record (superseded, archived) when ``history_of`` is None or names its run."""
    active = record.state == Lifecycle.ACTIVE
    return active or history_of is None or record.run_name in history_of
