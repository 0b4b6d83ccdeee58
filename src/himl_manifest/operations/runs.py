"""What `himl runs` and `himl audit` show: run rows, sync states, audit answers. No printing.

Sync state of a run record (``himl runs``), from the manifests' desired run names:

- ``in sync``: the manifests ask for exactly this run;
- ``out of sync``: the manifests ask for this experiment and seed, with other settings (the
  next apply replaces or resumes it);
- ``orphan``: the manifests no longer ask for this experiment or seed;
- ``superseded`` / ``archived``: its lifecycle state, whatever the manifests say;
- ``unknown``: no manifests were read.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from himl_manifest.model import Lifecycle, RunRecord, RunStatus
from himl_manifest.spec import RunSpec

IN_SYNC = "in sync"
OUT_OF_SYNC = "out of sync"
ORPHAN = "orphan"
UNKNOWN = "unknown"
#: Versions of the JSON documents of `himl runs` and `himl audit`.
RUNS_FORMAT = "himl-runs/v1"
AUDIT_FORMAT = "himl-audit/v1"


@dataclass(frozen=True)
class RunRow:
    """One run attempt as `himl runs` shows it."""

    run_name: str
    run_id: str
    experiment: str
    seed: int
    attempt: int
    status: str
    state: str
    sync: str
    start_time: float | None
    duration_s: float | None
    metrics: dict[str, float]
    output_dir: str | None
    error_tail: str
    manifest_path: str
    commit: str | None
    #: Where a person can see the run (Azure ML: its studio page); None when there is none.
    url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync_state(record: RunRecord, desired: Sequence[RunSpec] | None) -> str:
    if record.state in (Lifecycle.SUPERSEDED, Lifecycle.ARCHIVED):
        return record.state
    if desired is None:
        return UNKNOWN
    if any(run.run_name == record.run_name for run in desired):
        return IN_SYNC
    if any((run.experiment, run.seed) == (record.experiment, record.seed) for run in desired):
        return OUT_OF_SYNC
    return ORPHAN


def latest_attempts(records: Iterable[RunRecord]) -> list[RunRecord]:
    latest: dict[str, RunRecord] = {}
    for record in records:
        if record.run_name not in latest or record.attempt > latest[record.run_name].attempt:
            latest[record.run_name] = record
    return list(latest.values())


def run_rows(
    records: Sequence[RunRecord], desired: Sequence[RunSpec] | None, *, show_all: bool = False
) -> list[RunRow]:
    """Rows for `himl runs`: the latest attempt of each live run, or every attempt (``all``)."""
    chosen = list(records) if show_all else latest_attempts(records)
    rows = []
    for record in chosen:
        if not show_all and record.state != Lifecycle.ACTIVE:
            continue
        end = record.end_time
        duration = end - record.start_time if end and record.start_time else None
        rows.append(
            RunRow(
                run_name=record.run_name,
                run_id=record.run_id,
                experiment=record.experiment,
                seed=record.seed,
                attempt=record.attempt,
                status=record.status,
                state=record.state,
                sync=sync_state(record, desired),
                start_time=record.start_time,
                duration_s=duration,
                metrics=dict(record.metrics),
                output_dir=record.output_dir,
                error_tail=record.error_tail,
                manifest_path=record.manifest_path,
                commit=record.provenance.get("head_commit"),
                url=record.url,
            )
        )
    rows.sort(key=lambda r: (r.experiment, r.seed, r.start_time or 0.0, r.attempt))
    return rows


def key_metrics(metrics: dict[str, float], limit: int = 3) -> dict[str, float]:
    """The metrics worth a column: validation and test ones first, then losses."""

    def rank(name: str) -> tuple[int, str]:
        if name.startswith(("val", "test")):
            return (0, name)
        return (1 if "loss" in name else 2, name)

    names = sorted((n for n in metrics if rank(n)[0] < 2 and "epoch" not in n), key=rank)
    return {name: metrics[name] for name in names[:limit]}


def failed_tail(row: RunRow, lines: int = 5) -> list[str]:
    if row.status not in (RunStatus.FAILED, "cancelled") or not row.error_tail.strip():
        return []
    return row.error_tail.strip().splitlines()[-lines:]


# --- audit ------------------------------------------------------------------------------------


def record_identity(record: RunRecord) -> dict[str, Any]:
    """The fields every audit document shows of a run: who it is, how it stands, its provenance."""
    return {
        "run_name": record.run_name,
        "run_id": record.run_id,
        "experiment": record.experiment,
        "seed": record.seed,
        "attempt": record.attempt,
        "status": record.status,
        "state": record.state,
        "manifest_path": record.manifest_path,
        "provenance": dict(record.provenance),
    }


@dataclass(frozen=True)
class AuditAnswer:
    """Which commit and manifest produced a run, and how to produce it again."""

    record: RunRecord
    attempts: list[dict[str, Any]]
    manifest_content: str | None
    reproduce: str | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        record = self.record
        return {
            "format": AUDIT_FORMAT,
            **record_identity(record),
            "spec_hash": record.spec_hash,
            "output_dir": record.output_dir,
            "url": record.url,
            "resume_from": record.resume_from,
            "manifest_content": self.manifest_content,
            "reproduce": self.reproduce,
            "attempts": self.attempts,
            "warnings": self.warnings,
        }


def find_records(records: Sequence[RunRecord], reference: str) -> list[RunRecord]:
    """Every attempt of the run named (or with the id) ``reference``, oldest first."""
    by_id = [r for r in records if r.run_id == reference]
    name = by_id[0].run_name if by_id else reference
    found = [r for r in records if r.run_name == name]
    return sorted(found, key=lambda r: r.attempt)


def reproduce_command(record: RunRecord) -> str | None:
    commit = record.provenance.get("head_commit") or record.provenance.get("manifest_commit")
    if not commit or not record.manifest_path:
        return None
    manifest = shlex.quote(record.manifest_path)
    target = shlex.quote(record.experiment)
    return f"git checkout {commit[:12]} && himl apply {manifest} --target {target}"


def audit_run(records: Sequence[RunRecord], reference: str, root: Path) -> AuditAnswer | None:
    """The audit answer for one run (its newest attempt), or None when no such run exists."""
    from himl_manifest.operations.provenance import GitProvenance

    found = find_records(records, reference)
    if not found:
        return None
    record = found[-1]
    commit = record.provenance.get("manifest_commit") or record.provenance.get("head_commit")
    content = GitProvenance(root).show(commit, record.manifest_path) if commit else None
    warnings = []
    if record.provenance.get("dirty") == "true":
        warnings.append(
            "the manifest had uncommitted changes when it was applied (--allow-dirty): "
            "the commit does not hold exactly what ran"
        )
    if commit and content is None:
        warnings.append(f"commit {commit[:12]} is not in this repository (fetch it first)")
    attempts = [
        {
            "attempt": r.attempt,
            "run_id": r.run_id,
            "status": r.status,
            "applied_at": r.provenance.get("applied_at"),
            "applied_by": r.provenance.get("applied_by"),
            "head_commit": r.provenance.get("head_commit"),
        }
        for r in found
    ]
    return AuditAnswer(record, attempts, content, reproduce_command(record), warnings)


def runs_of_commit(records: Sequence[RunRecord], commit: str) -> list[tuple[RunRecord, str]]:
    """Runs whose manifest commit or HEAD-at-apply is ``commit`` (a full sha or a prefix)."""
    commit = commit.lower()
    out = []
    for record in records:
        manifest = record.provenance.get("manifest_commit") or ""
        head = record.provenance.get("head_commit") or ""
        if manifest.startswith(commit):
            out.append((record, "manifest commit"))
        elif head.startswith(commit):
            out.append((record, "HEAD at apply"))
    out.sort(key=lambda item: (item[0].experiment, item[0].seed, item[0].attempt))
    return out
