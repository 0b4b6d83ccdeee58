"""An in-memory backend, shipped for tests and demos (like httpx's ``MockTransport``).

It plays both roles of :mod:`.base` over a dict of records. Runs do not execute: a submitted run
is queued, and takes its outcome when it is waited for (:meth:`MemoryBackend.wait`), chosen per
run name (:meth:`MemoryBackend.set_outcome`) or by a default (a status, or a function of the
run spec and attempt). Every read is counted in :attr:`MemoryBackend.queries`, so tests and
benchmarks can assert how many times the store was read. Its state dies with the process, so
the CLI does not offer it to users.

    backend = MemoryBackend(outcome=COMPLETED)
    backend.set_outcome("hello-world-s1-3fa2c91b", RunStatus.FAILED)
    backend.submit(runs)
    backend.wait([run.run_name for run in runs])
    backend.finish("hello-world-s2-77aa01bc", RunStatus.COMPLETED)  # a run left running ends
"""

from __future__ import annotations

import copy
import itertools
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace

from himl_manifest.backends.base import (
    BackendBase,
    Capabilities,
    MetricHistories,
    Progress,
    ProgressCallback,
    SubmitOutcome,
    Submitted,
)
from himl_manifest.errors import CheckpointError, StoreError
from himl_manifest.model import (
    TERMINAL,
    Lifecycle,
    RunRecord,
    RunStatus,
    parse_enum,
    with_cosmetic,
)
from himl_manifest.records import listed, parse_run_reference, path_in_run
from himl_manifest.records.select import chosen_attempt, latest_attempts, named
from himl_manifest.spec import RunSpec

_INSTANCES = itertools.count(1)

#: The outcome of a submitted run: a status, or a function of (run, attempt) giving one.
Outcome = RunStatus | str | Callable[[RunSpec, int], RunStatus | str]


class MemoryBackend(BackendBase):
    """The run store as a dict of ``(run name, attempt) -> RunRecord``."""

    name = "memory"
    capabilities = Capabilities(waits_locally=True, multi_node=True)

    def __init__(
        self,
        records: Iterable[RunRecord] = (),
        *,
        outcome: Outcome = RunStatus.COMPLETED,
        checkpoints: bool = True,
        query_cost_s: float = 0.0,
    ) -> None:
        self._records: dict[tuple[str, int], RunRecord] = {}
        self._outcomes: dict[str, RunStatus] = {}
        self._checkpoints: dict[str, bool] = {}
        self._pending: dict[str, RunSpec] = {}
        self._files: dict[tuple[str, int], set[str]] = {}
        self._histories: MetricHistories = {}
        #: Tells this store's run ids from another's (ids are unique across stores, as real
        #: backends' are).
        self._instance = next(_INSTANCES)
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

    def set_outcome(
        self, run_name: str, status: RunStatus | str, *, checkpoint: bool | None = None
    ) -> None:
        """Every later attempt of ``run_name`` ends with ``status`` (and a checkpoint or not)."""
        self._outcomes[run_name] = parse_enum(RunStatus, status, "status")
        if checkpoint is not None:
            self._checkpoints[run_name] = checkpoint

    def finish(
        self, run_name: str, status: RunStatus | str, *, checkpoint: bool | None = None
    ) -> None:
        """End the latest attempt of ``run_name`` (e.g. one left running) with ``status``."""
        ended: RunStatus = parse_enum(RunStatus, status, "status")
        record = self._latest(run_name)
        leaves = self.checkpoints if checkpoint is None else checkpoint
        self.add(replace(record, status=ended, has_checkpoint=record.has_checkpoint or leaves))

    def records(self) -> list[RunRecord]:
        """Every record, without counting a query."""
        return list(self._records.values())

    def get_run(self, run_name: str) -> list[RunRecord]:
        """Every attempt of one run: one query (the naive per-run lookup of the benchmark)."""
        self._query()
        return [record for (name, _), record in self._records.items() if name == run_name]

    # --- the run store ----------------------------------------------------------------------

    def list_runs(
        self, *, full: bool = True, history_of: Collection[str] | None = None
    ) -> list[RunRecord]:
        self._query()
        return [r for r in self._records.values() if listed(r, history_of)]

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        keys = self._keys(run_name)
        for key in keys:
            record = self._records[key]
            spec = with_cosmetic(record.spec, run.spec)
            self._records[key] = replace(record, spec_source=spec)

    def set_state(self, run_name: str, state: Lifecycle | str) -> None:
        lifecycle: Lifecycle = parse_enum(Lifecycle, state, "state")
        for key in self._keys(run_name):
            self._records[key] = replace(self._records[key], state=lifecycle)

    def check_continuity(self, *, confirmed: bool) -> list[str]:
        """A memory store is never lost under a running process."""
        return []

    def find_run(self, reference: str) -> RunRecord | None:
        return chosen_attempt(named(self._records.values(), reference))

    def resolve_checkpoint(self, reference: str) -> str:
        """The newest attempt's URI of the file: ``checkpoints/last.ckpt`` of a run that left a
        checkpoint, or a file added with :meth:`add_file`."""
        name, inside = parse_run_reference(reference)
        found = self.find_run(name)
        if found is None:
            raise CheckpointError(f"checkpoint {reference!r}: no run {name!r} in the memory store")
        attempts = sorted(self._keys(found.run_name), key=lambda key: -key[1])
        for key in attempts:
            record = self._records[key]
            files = self._files.get(key, set())
            if str(inside) in files or (record.has_checkpoint and inside == path_in_run("")):
                return f"{record.output_dir}/{inside}"
        raise CheckpointError(f"checkpoint {reference!r}: run {found.run_name} has no {inside}")

    def metric_histories(self, run_ids: Collection[str]) -> MetricHistories:
        """The histories given to :meth:`log_history` (one read, counted in :attr:`queries`)."""
        self._query()
        return {
            run_id: {key: list(points) for key, points in self._histories.get(run_id, {}).items()}
            for run_id in run_ids
        }

    def log_history(self, run_id: str, key: str, points: Iterable[tuple[int, float]]) -> None:
        """Record the logged values ``(step, value)`` of metric ``key`` of run ``run_id``; the
        record's latest metrics (``RunRecord.metrics``) follow."""
        history = self._histories.setdefault(run_id, {}).setdefault(key, [])
        history.extend((int(step), float(value)) for step, value in points)
        history.sort(key=lambda point: point[0])
        for index, record in self._records.items():
            if record.run_id == run_id and history:
                metrics = {**record.metrics, key: history[-1][1]}
                self._records[index] = replace(record, metrics=metrics)

    def add_file(self, run_name: str, path: str) -> None:
        """Put a file (e.g. ``checkpoints/best.ckpt``) into the latest attempt's run folder."""
        record = self._latest(run_name)
        self._files.setdefault((run_name, record.attempt), set()).add(str(path_in_run(path)))

    # --- the executor -----------------------------------------------------------------------

    def submit(
        self, runs: Sequence[RunSpec], *, attempts: Mapping[str, int] | None = None
    ) -> list[Submitted]:
        out = []
        for run in runs:
            attempt = (attempts or {}).get(run.run_name, 1)
            existing = self._records.get((run.run_name, attempt))
            if existing is not None:
                same = existing.spec_hash == run.spec_hash
                outcome = SubmitOutcome.EXISTED if same else SubmitOutcome.CONFLICT
                message = "" if same else f"exists with spec hash {existing.spec_hash}"
                out.append(Submitted(run.run_name, attempt, outcome, existing, message))
                continue
            record = self._record(run, attempt)
            self.add(record)
            self._pending[run.run_name] = run
            self.submitted += 1
            out.append(Submitted(run.run_name, attempt, SubmitOutcome.CREATED, record))
        return out

    def wait(
        self, run_names: Collection[str], *, progress: ProgressCallback | None = None
    ) -> list[RunRecord]:
        """Give each queued run its outcome (runs left running stay so)."""
        for name in run_names:
            run = self._pending.pop(name, None)
            if run is None:
                continue
            record = self._latest(name)
            status = self._status(run, record.attempt)
            ended = status in TERMINAL
            checkpoint = ended and self._checkpoints.get(name, self.checkpoints)
            error = "simulated failure" if status == RunStatus.FAILED else ""
            record = replace(record, status=status, has_checkpoint=checkpoint, error_tail=error)
            self.add(record)
            if progress is not None:
                progress(Progress(name, status, f"attempt {record.attempt}"))
        wanted = set(run_names)
        return [r for r in self._records.values() if r.run_name in wanted]

    # --- internals --------------------------------------------------------------------------

    def _query(self) -> None:
        self.queries += 1
        if self.query_cost_s:
            time.sleep(self.query_cost_s)

    def _keys(self, run_name: str) -> list[tuple[str, int]]:
        keys = [key for key in self._records if key[0] == run_name]
        if not keys:
            raise StoreError(f"no run named {run_name!r}")
        return keys

    def _latest(self, run_name: str) -> RunRecord:
        return latest_attempts(self._records[k] for k in self._keys(run_name))[run_name]

    def _status(self, run: RunSpec, attempt: int) -> RunStatus:
        if run.run_name in self._outcomes:
            return self._outcomes[run.run_name]
        status = self.outcome(run, attempt) if callable(self.outcome) else self.outcome
        return parse_enum(RunStatus, status, "outcome")  # type: ignore[no-any-return]

    def _record(self, run: RunSpec, attempt: int) -> RunRecord:
        provenance = {str(key): str(value) for key, value in run.provenance.items()}
        provenance["conda_sha256"] = run.conda_sha256 or ""  # "": no conda file
        return RunRecord(
            run_name=run.run_name,
            run_id=f"mem{self._instance}-{len(self._records) + 1}",
            experiment=run.experiment,
            seed=run.seed,
            fold=run.fold,
            spec_hash=run.spec_hash,
            status=RunStatus.QUEUED,
            spec_source=copy.deepcopy(run.spec),
            attempt=attempt,
            state=Lifecycle.ACTIVE,
            manifest_path=run.manifest_path,
            resume_from=run.resume_from,
            output_dir=f"memory://{run.run_name}/{attempt}",
            provenance=provenance,
        )
