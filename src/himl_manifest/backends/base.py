"""The two roles behind every backend: a run store and an executor.

A **run store** (:class:`RunStore`) answers "what runs exist" and takes metadata and lifecycle
changes, all in bulk or by run name, never per manifest:

- :meth:`RunStore.list_runs`: one bulk read of every run this tool manages;
- :meth:`RunStore.update_metadata`: change cosmetic fields (description, tags, display name);
- :meth:`RunStore.set_state`: mark a run superseded or archived (never delete it);
- :meth:`RunStore.find_run` / :meth:`RunStore.resolve_checkpoint`: a run reference
  ``<run>[:<dir/>file.ckpt]`` -> the run, and its checkpoint as a path or URI a job can read;
- :meth:`RunStore.metric_histories`: every logged value of the metrics of many runs, in bulk
  (what ``himl report`` and ``himl compare`` read).

An **executor** (:class:`Executor`) starts runs and reports on them:

- :meth:`Executor.submit` creates the records of new runs (idempotent by run name and attempt)
  and returns as soon as they are accepted, with a typed :class:`Submitted` outcome per run:
  created, existed already with the same identity, or exists with another identity (a conflict);
- :meth:`Executor.wait` blocks until runs end, with progress. An executor whose runs live only
  as long as the process that waits (:attr:`Capabilities.waits_locally`: local processes) must be
  waited for; for one whose runs live elsewhere (Azure ML), waiting is optional.

A :class:`Backend` is both roles over one store: what ``himl apply`` needs. Every
implementation is held to the same behaviour by ``tests/backends/test_contract.py``.

Implementations: :mod:`.local` (MLflow tracking store + local worker processes),
:mod:`.azureml` (an Azure ML workspace), :mod:`.routed` (each run to the executor kind
:func:`.registry.placement` names) and :mod:`.memory` (in-process, for tests and demos); the
executor kinds are registered in :mod:`.registry`. Optional behaviour is a hook of
:class:`BackendBase` with a default, never an ``isinstance`` test in the layers above.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import HimlError, StoreError
from himl_manifest.model import Lifecycle, RunRecord, RunStatus, _StrEnum
from himl_manifest.spec import RunSpec


@dataclass(frozen=True)
class Progress:
    """One progress event while runs execute (rendered on stderr by the CLI)."""

    run_name: str
    status: RunStatus
    message: str = ""


ProgressCallback = Callable[[Progress], None]

#: ``{run_id: {metric: [(step, value), ...]}}``: what :meth:`RunStore.metric_histories` returns.
MetricHistories = dict[str, dict[str, list[tuple[int, float]]]]


class SubmitOutcome(_StrEnum):
    """What :meth:`Executor.submit` did about one run."""

    CREATED = "created"
    #: The (run name, attempt) existed already with the same spec hash: another apply made it.
    EXISTED = "existed"
    #: The (run name, attempt) exists with another spec hash: nothing was created.
    CONFLICT = "conflict"


@dataclass(frozen=True)
class Submitted:
    """The outcome of submitting one run."""

    run_name: str
    attempt: int
    outcome: SubmitOutcome
    #: The record as it stands (the new one, or the one found); for a conflict, the one found.
    record: RunRecord | None = None
    message: str = ""


class SubmissionStopped(HimlError):
    """Submitting a batch stopped part way: the service refused a job, or Ctrl-C arrived.

    ``submitted``: the runs accepted before it stopped (they exist and go on); ``not_sent``:
    the runs never sent (nothing of them exists); ``cause``: why it stopped (an error, or a
    ``KeyboardInterrupt``). Apply records the accepted ones like any others and says which
    runs were not sent."""

    def __init__(
        self, submitted: Sequence[Submitted], not_sent: Sequence[str], cause: BaseException
    ) -> None:
        self.submitted = list(submitted)
        self.not_sent = list(not_sent)
        self.cause = cause
        why = "interrupted" if isinstance(cause, KeyboardInterrupt) else str(cause)
        super().__init__(
            f"submitting stopped after {len(self.submitted)} accepted run(s): {why}; "
            f"not sent: {', '.join(self.not_sent) or 'none'}"
        )

    @property
    def interrupted(self) -> bool:
        return isinstance(self.cause, KeyboardInterrupt)


@dataclass(frozen=True)
class Capabilities:
    """What an executor can do, checked before anything runs."""

    #: Runs execute only while the submitting process waits for them (local processes).
    waits_locally: bool
    #: Runs may span several nodes (``compute.num_nodes`` > 1); pre-flight refuses others.
    multi_node: bool = False
    #: The backend fetches the log of a run whose folder is not on this machine
    #: (:meth:`Backend.job_log`; a local run's log is its folder's ``runner.log``).
    logs: bool = False


class RunStore(Protocol):
    """What runs exist; their metadata and lifecycle state."""

    name: str

    def list_runs(
        self, *, full: bool = True, history_of: Collection[str] | None = None
    ) -> list[RunRecord]:
        """Every managed run record (all attempts, all states), in one bulk read.

        What a plan needs, and no more: ``full=False`` lets a store read history (superseded
        and archived records) light: the fields the planner uses of it (name, attempt, state,
        status, spec hash), no spec, metrics or provenance; ``history_of`` limits history to
        the records of these run names (the attempts of the runs a plan may submit). Active
        records are always all read, whole."""
        ...

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        """Copy the cosmetic fields of ``run`` onto every attempt of ``run_name`` in place."""
        ...

    def set_state(self, run_name: str, state: Lifecycle) -> None:
        """Mark every attempt of ``run_name`` superseded, archived (or active again)."""
        ...

    def check_continuity(self, *, confirmed: bool) -> list[str]:
        """Before changing anything: refuse, unless ``confirmed``, a store that looks lost or
        replaced (e.g. empty while the project has run outputs); return the warnings to show
        when confirmed."""
        ...

    def find_run(self, reference: str) -> RunRecord | None:
        """The run a name or backend id names: its newest completed attempt, else its newest."""
        ...

    def resolve_checkpoint(self, reference: str) -> str:
        """``<run name or id>[:<dir/>file.ckpt]`` -> a local path or a URI the job can read."""
        ...

    def metric_histories(self, run_ids: Collection[str]) -> MetricHistories:
        """Every logged value of every metric of the runs ``run_ids`` (backend ids), in bulk:
        ``{run_id: {metric: [(step, value), ...]}}``, each history ordered by step, then by
        logging time; an entry per requested id, empty for a run without metrics or unknown."""
        ...


class Executor(Protocol):
    """Starts runs and reports on them."""

    capabilities: Capabilities

    def submit(
        self, runs: Sequence[RunSpec], *, attempts: Mapping[str, int] | None = None
    ) -> list[Submitted]:
        """Create the records of ``runs`` and start them; return once they are accepted.

        ``attempts`` maps run names to the attempt number to create (default 1)."""
        ...

    def wait(
        self, run_names: Collection[str], *, progress: ProgressCallback | None = None
    ) -> list[RunRecord]:
        """Block until the latest attempts of ``run_names`` end; return every record of them."""
        ...


class Backend(RunStore, Executor, Protocol):
    """A run store and the executor that starts runs into it."""

    def preflight(
        self, runs: Sequence[RunSpec], *, expected: Collection[str] = ()
    ) -> list[Diagnostic]:
        """Before anything is uploaded or submitted: every problem of ``runs`` that the
        executor can find (its service's resources, what it would upload), as diagnostics in
        ``himl validate``'s format (warnings don't stop an apply). ``expected``: runs that
        will exist though they do not yet (submitted by this apply, or still going): a
        checkpoint they will write is no problem."""
        ...

    def read_warnings(self) -> list[str]:
        """What the reads so far skipped and the user should hear of (damaged records)."""
        ...

    def placement(self, run: RunSpec) -> str:
        """The executor ``run`` goes to (a backend over several names one of them)."""
        ...

    def capabilities_of(self, run: RunSpec) -> Capabilities:
        """The capabilities of the executor ``run`` goes to."""
        ...

    def job_log(self, record: RunRecord, *, follow: bool, out: TextIO) -> None:
        """Write the log of ``record``'s job to ``out`` (``follow``: until it ends), for a
        backend with :attr:`Capabilities.logs`; StoreError otherwise."""
        ...


class BackendBase:
    """The optional hooks of :class:`Backend`, with the defaults of a backend that has
    nothing to add and one executor: no pre-flight problems, no read warnings, every run
    placed on itself."""

    name: str
    capabilities: Capabilities

    def preflight(
        self, runs: Sequence[RunSpec], *, expected: Collection[str] = ()
    ) -> list[Diagnostic]:
        return []

    def read_warnings(self) -> list[str]:
        return []

    def placement(self, run: RunSpec) -> str:
        return self.name

    def capabilities_of(self, run: RunSpec) -> Capabilities:
        return self.capabilities

    def job_log(self, record: RunRecord, *, follow: bool, out: TextIO) -> None:
        where = record.url or record.output_dir or "-"
        raise StoreError(
            f"run {record.run_name}: its log is not on this machine ({where}) and the backend "
            "that holds it cannot fetch logs"
        )
