"""An in-memory backend, shipped for tests and demos (like httpx's ``MockTransport``).

It implements the whole :class:`~himl_manifest.backends.base.Backend` interface over a dict of
records. Runs do not execute: a submitted run takes its outcome at once, chosen per run name
(:meth:`MemoryBackend.set_outcome`) or by a default (a status, or a function of the run spec and
attempt). Every read is counted in :attr:`MemoryBackend.queries`, so tests and benchmarks can
assert how many times the store was read.

    backend = MemoryBackend(outcome=COMPLETED)
    backend.set_outcome("hello-world-s1-3fa2c91b", FAILED)
    backend.submit(runs)
    backend.finish("hello-world-s2-77aa01bc", COMPLETED)  # a run left running ends later
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from himl_manifest.backends.base import (
    ARCHIVED,
    CANCELLED,
    COMPLETED,
    FAILED,
    LIVE,
    QUEUED,
    RUNNING,
    SUPERSEDED,
    Progress,
    ProgressCallback,
    RunRecord,
)
from himl_manifest.errors import CheckpointError, StoreError
from himl_manifest.spec import COSMETIC_TOP, COSMETIC_TRACKING, RunSpec

#: The outcome of a submitted run: a status, or a function of (run, attempt) giving one.
Outcome = str | Callable[[RunSpec, int], str]

STATUSES = frozenset({QUEUED, RUNNING, COMPLETED, FAILED, CANCELLED})
STATES = frozenset({LIVE, SUPERSEDED, ARCHIVED})
DEFAULT_CHECKPOINT = "outputs/checkpoints/last.ckpt"


class MemoryBackend:
    """The run store as a dict of ``(run name, attempt) -> RunRecord``."""

    name = "memory"

    def __init__(
        self,
        records: Iterable[RunRecord] = (),
        *,
        outcome: Outcome = COMPLETED,
        checkpoints: bool = True,
        query_cost_s: float = 0.0,
    ) -> None:
        self._records: dict[tuple[str, int], RunRecord] = {}
        self._outcomes: dict[str, str] = {}
        self._checkpoints: dict[str, bool] = {}
        self.outcome = outcome
        #: Whether runs that end (completed, failed, cancelled) leave a checkpoint.
        self.checkpoints = checkpoints
        #: Simulated latency of every read, for benchmarks of per-run lookups.
        self.query_cost_s = query_cost_s
        #: Number of reads so far (:meth:`list_runs` and :meth:`get_run` calls).
        self.queries = 0
        #: Number of records created by :meth:`submit`.
        self.submitted = 0
        for record in records:
            self.add(record)

    # --- test helpers -----------------------------------------------------------------------

    def add(self, record: RunRecord) -> None:
        """Put a record into the store as it is (to set up a history)."""
        self._records[(record.run_name, record.attempt)] = record

    def set_outcome(self, run_name: str, status: str, *, checkpoint: bool | None = None) -> None:
        """Every later attempt of ``run_name`` ends with ``status`` (and a checkpoint or not)."""
        _check(status, STATUSES, "status")
        self._outcomes[run_name] = status
        if checkpoint is not None:
            self._checkpoints[run_name] = checkpoint

    def finish(self, run_name: str, status: str, *, checkpoint: bool | None = None) -> None:
        """End the latest attempt of ``run_name`` (e.g. one left running) with ``status``."""
        _check(status, STATUSES, "status")
        record = self._latest(run_name)
        leaves = self.checkpoints if checkpoint is None else checkpoint
        self.add(replace(record, status=status, has_checkpoint=record.has_checkpoint or leaves))

    def records(self) -> list[RunRecord]:
        """Every record, without counting a query."""
        return list(self._records.values())

    # --- the Backend interface --------------------------------------------------------------

    def list_runs(self) -> list[RunRecord]:
        self._query()
        return list(self._records.values())

    def get_run(self, run_name: str) -> list[RunRecord]:
        """Every attempt of one run: one query (the naive per-run lookup of the benchmark)."""
        self._query()
        return [record for (name, _), record in self._records.items() if name == run_name]

    def submit(
        self,
        runs: Sequence[RunSpec],
        *,
        attempts: dict[str, int] | None = None,
        jobs: int = 1,
        progress: ProgressCallback | None = None,
    ) -> list[RunRecord]:
        created = []
        for run in runs:
            attempt = (attempts or {}).get(run.run_name, 1)
            existing = self._records.get((run.run_name, attempt))
            if existing is not None:
                if existing.spec_hash != run.spec_hash:
                    raise StoreError(
                        f"{run.run_name} attempt {attempt} exists with another spec hash "
                        f"({existing.spec_hash}, not {run.spec_hash})"
                    )
                created.append(existing)
                if progress is not None:
                    progress(Progress(run.run_name, existing.status, "exists already"))
                continue
            record = self._record(run, attempt)
            self.add(record)
            self.submitted += 1
            created.append(record)
            if progress is not None:
                progress(Progress(run.run_name, record.status, f"attempt {attempt}"))
        return created

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        found = False
        for key, record in list(self._records.items()):
            if key[0] == run_name:
                self._records[key] = replace(record, spec=_with_cosmetic(record.spec, run.spec))
                found = True
        if not found:
            raise StoreError(f"no run named {run_name!r}")

    def set_state(self, run_name: str, state: str) -> None:
        _check(state, STATES, "state")
        keys = [key for key in self._records if key[0] == run_name]
        if not keys:
            raise StoreError(f"no run named {run_name!r}")
        for key in keys:
            self._records[key] = replace(self._records[key], state=state)

    def resolve_checkpoint(self, reference: str) -> str:
        run_ref, _, path = reference.partition(":")
        record = next(
            (r for r in self._by_recency() if run_ref in (r.run_name, r.run_id)),
            None,
        )
        if record is None:
            raise CheckpointError(f"no run named {run_ref!r} in the memory store")
        if not record.has_checkpoint:
            raise CheckpointError(f"run {record.run_name} has no checkpoint")
        if not path:
            path = DEFAULT_CHECKPOINT
        elif "/" not in path:
            path = f"outputs/checkpoints/{path}"
        return f"memory://{record.run_name}/{record.attempt}/{path}"

    # --- internals --------------------------------------------------------------------------

    def _query(self) -> None:
        self.queries += 1
        if self.query_cost_s:
            time.sleep(self.query_cost_s)

    def _latest(self, run_name: str) -> RunRecord:
        attempts = [r for (name, _), r in self._records.items() if name == run_name]
        if not attempts:
            raise StoreError(f"no run named {run_name!r}")
        return max(attempts, key=lambda r: r.attempt)

    def _by_recency(self) -> list[RunRecord]:
        return sorted(self._records.values(), key=lambda r: r.attempt, reverse=True)

    def _record(self, run: RunSpec, attempt: int) -> RunRecord:
        if run.run_name in self._outcomes:
            status = self._outcomes[run.run_name]
        elif callable(self.outcome):
            status = self.outcome(run, attempt)
        else:
            status = self.outcome
        _check(status, STATUSES, "outcome")
        ended = status in (COMPLETED, FAILED, CANCELLED)
        checkpoint = ended and self._checkpoints.get(run.run_name, self.checkpoints)
        provenance = {str(key): str(value) for key, value in run.provenance.items()}
        provenance["conda_sha256"] = run.conda_sha256 or ""  # "": no conda file
        return RunRecord(
            run_name=run.run_name,
            run_id=f"mem-{len(self._records) + 1}",
            experiment=run.experiment,
            seed=run.seed,
            spec_hash=run.spec_hash,
            status=status,
            spec=copy.deepcopy(run.spec),
            attempt=attempt,
            state=LIVE,
            manifest_path=run.manifest_path,
            resume_from=run.resume_from,
            has_checkpoint=checkpoint,
            output_dir=f"memory://{run.run_name}/{attempt}",
            provenance=provenance,
            error_tail="simulated failure" if status == FAILED else "",
        )


def _with_cosmetic(spec: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the cosmetic fields (description, tags, display name) of ``source``."""
    out = copy.deepcopy(spec)
    for key in COSMETIC_TOP:
        if key in source:
            out[key] = copy.deepcopy(source[key])
        else:
            out.pop(key, None)
    tracking = dict(out.get("tracking") or {})
    new_tracking = source.get("tracking") or {}
    for key in COSMETIC_TRACKING:
        if key in new_tracking:
            tracking[key] = new_tracking[key]
        else:
            tracking.pop(key, None)
    if tracking or "tracking" in out:
        out["tracking"] = tracking
    return out


def _check(value: str, allowed: frozenset[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}: expected one of {sorted(allowed)}")
