"""One backend over several: each run goes to the executor kind its placement names.

Where a run executes is decided by :func:`~.registry.placement` (``compute.target: local``
here, any other target a cluster of the remote kind). One plan covers every kind:
:meth:`RoutedBackend.list_runs` reads every store once, :meth:`RoutedBackend.submit` hands each
run to its own executor, and metadata and lifecycle changes go to the store that holds the run.

It knows no backend: it routes by a function of the run spec over named backends, so the
contract suite holds it to the same behaviour over two in-memory backends.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TextIO

from himl_manifest.backends.base import (
    Backend,
    BackendBase,
    Capabilities,
    MetricHistories,
    ProgressCallback,
    SubmissionStopped,
    Submitted,
)
from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import CheckpointError, ConfigError, HimlError, StoreError
from himl_manifest.model import Lifecycle, RunRecord, parse_enum
from himl_manifest.spec import RunSpec


class RoutedBackend(BackendBase):
    """Named backends, one per executor kind; runs are routed by ``route_of`` (for the CLI's
    backends, :func:`~.registry.placement`)."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        *,
        route_of: Callable[[RunSpec], str],
        missing: Mapping[str, str] | None = None,
    ) -> None:
        if not backends:
            raise ConfigError("a routed backend needs at least one backend")
        self.backends = dict(backends)
        self.route_of = route_of
        #: Why a kind of backend is not there (e.g. no Azure ML workspace configured).
        self.missing = dict(missing or {})
        self.name = "+".join(sorted(self.backends))
        self.capabilities = Capabilities(
            waits_locally=any(b.capabilities.waits_locally for b in self.backends.values()),
            multi_node=all(b.capabilities.multi_node for b in self.backends.values()),
            logs=any(b.capabilities.logs for b in self.backends.values()),
        )
        self._holder: dict[str, str] = {}  # run name -> backend that holds it

    # -- routing -----------------------------------------------------------------------------

    def backend_for(self, run: RunSpec) -> Backend:
        kind = self.route_of(run)
        if kind not in self.backends:
            why = self.missing.get(kind, f"no {kind} backend is configured")
            target = (run.spec.get("compute") or {}).get("target", "local")
            raise ConfigError(f"{run.run_name}: compute.target {target!r} needs {kind}: {why}")
        return self.backends[kind]

    def placement(self, run: RunSpec) -> str:
        return self.route_of(run)

    def capabilities_of(self, run: RunSpec) -> Capabilities:
        return self.backend_for(run).capabilities

    def _holding(self, run_name: str) -> list[Backend]:
        known = self._holder.get(run_name)
        if known is not None:
            return [self.backends[known]]
        return list(self.backends.values())

    # -- the run store -----------------------------------------------------------------------

    def list_runs(
        self, *, full: bool = True, history_of: Collection[str] | None = None
    ) -> list[RunRecord]:
        records: list[RunRecord] = []
        for kind, backend in sorted(self.backends.items()):
            found = backend.list_runs(full=full, history_of=history_of)
            for record in found:
                self._holder.setdefault(record.run_name, kind)
            records.extend(found)
        return records

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        self._first(run_name, lambda b: b.update_metadata(run_name, run))

    def set_state(self, run_name: str, state: Lifecycle | str) -> None:
        lifecycle: Lifecycle = parse_enum(Lifecycle, state, "state")
        self._first(run_name, lambda b: b.set_state(run_name, lifecycle))

    def check_continuity(self, *, confirmed: bool) -> list[str]:
        warnings: list[str] = []
        for backend in self.backends.values():
            warnings += backend.check_continuity(confirmed=confirmed)
        return warnings

    def find_run(self, reference: str) -> RunRecord | None:
        for backend in self._holding(reference):
            found = backend.find_run(reference)
            if found is not None:
                return found
        return None

    def resolve_checkpoint(self, reference: str) -> str:
        errors = []
        for backend in self.backends.values():
            try:
                return backend.resolve_checkpoint(reference)
            except CheckpointError as exc:
                errors.append(str(exc))
        raise CheckpointError("; ".join(errors))

    def metric_histories(self, run_ids: Collection[str]) -> MetricHistories:
        """Each store's histories of the runs it holds (a run's id names it in one store);
        local stores first, so a remote one is asked only about the runs they lack."""
        merged: MetricHistories = {run_id: {} for run_id in run_ids}
        ordered = sorted(
            self.backends.items(),
            key=lambda item: (not item[1].capabilities.waits_locally, item[0]),
        )
        for _kind, backend in ordered:
            wanted = [run_id for run_id, found in merged.items() if not found]
            if not wanted:
                break
            for run_id, found in backend.metric_histories(wanted).items():
                if found and run_id in merged:
                    merged[run_id] = found
        return merged

    def _first(self, run_name: str, change: Callable[[Backend], None]) -> None:
        """Apply ``change`` in the store that holds ``run_name``."""
        errors = []
        for backend in self._holding(run_name):
            try:
                change(backend)
                return
            except StoreError as exc:
                errors.append(str(exc))
        raise StoreError("; ".join(errors) or f"no run named {run_name!r}")

    def read_warnings(self) -> list[str]:
        return [w for _, backend in sorted(self.backends.items()) for w in backend.read_warnings()]

    def job_log(self, record: RunRecord, *, follow: bool, out: TextIO) -> None:
        """The log of ``record``'s job, from the part that holds it."""
        self._first(record.run_name, lambda b: b.job_log(record, follow=follow, out=out))

    # -- the executor ------------------------------------------------------------------------

    def _groups(self, runs: Sequence[RunSpec]) -> dict[str, list[RunSpec]]:
        groups: dict[str, list[RunSpec]] = {}
        for run in runs:
            self.backend_for(run)  # every run has somewhere to go before any is submitted
            groups.setdefault(self.route_of(run), []).append(run)
        return groups

    def preflight(
        self, runs: Sequence[RunSpec], *, expected: Collection[str] = ()
    ) -> list[Diagnostic]:
        """Each executor's pre-flight of the runs routed to it (ConfigError: a run with
        nowhere to go)."""
        found: list[Diagnostic] = []
        for kind, group in sorted(self._groups(runs).items()):
            found += self.backends[kind].preflight(group, expected=expected)
        return found

    def submit(
        self, runs: Sequence[RunSpec], *, attempts: Mapping[str, int] | None = None
    ) -> list[Submitted]:
        """Each group to its executor, those that wait here last (their runs start when
        waited for). One executor's failure does not hold back another's runs: the other
        groups are submitted, then :class:`SubmissionStopped` says what was accepted and what
        was not sent (its cause: the first failure)."""
        groups = self._groups(runs)
        order = sorted(groups, key=lambda k: (self.backends[k].capabilities.waits_locally, k))
        outcomes: dict[str, Submitted] = {}
        not_sent: list[str] = []
        failure: BaseException | None = None
        for position, kind in enumerate(order):
            try:
                accepted = self.backends[kind].submit(groups[kind], attempts=attempts)
            except SubmissionStopped as stopped:
                accepted, failure = stopped.submitted, failure or stopped.cause
                not_sent += stopped.not_sent
            except HimlError as exc:
                accepted, failure = [], failure or exc
                not_sent += [run.run_name for run in groups[kind]]
            self._take(kind, accepted, outcomes)
            if isinstance(failure, KeyboardInterrupt):  # Ctrl-C: send nothing more
                rest = order[position + 1 :]
                not_sent += [run.run_name for later in rest for run in groups[later]]
                break
        done = [outcomes[run.run_name] for run in runs if run.run_name in outcomes]
        if failure is not None:
            raise SubmissionStopped(done, not_sent, failure)
        return done

    def _take(
        self, kind: str, accepted: Sequence[Submitted], outcomes: dict[str, Submitted]
    ) -> None:
        for submitted in accepted:
            outcomes[submitted.run_name] = submitted
            self._holder[submitted.run_name] = kind

    def wait(
        self, run_names: Collection[str], *, progress: ProgressCallback | None = None
    ) -> list[RunRecord]:
        """Wait for each run through the executor that holds it, those executed here first
        (they run only while we wait, so no remote wait delays them)."""
        records: list[RunRecord] = []
        ordered = sorted(
            self.backends.items(),
            key=lambda item: (not item[1].capabilities.waits_locally, item[0]),
        )
        for kind, backend in ordered:
            mine = [name for name in run_names if self._holder.get(name, kind) == kind]
            if mine:
                records += backend.wait(mine, progress=progress)
        return records
