"""The backend interface: the run store is the state, and the backend is how we reach it.

A backend does five things, all in bulk or by run name, never per manifest:

- :meth:`Backend.list_runs`: one bulk read of every run this tool manages.
- :meth:`Backend.submit`: create the records of new runs (idempotent by run name and attempt)
  and start them.
- :meth:`Backend.update_metadata`: change cosmetic fields (description, tags, display name).
- :meth:`Backend.set_state`: mark a run superseded or archived (never delete it).
- :meth:`Backend.resolve_checkpoint`: turn ``<run>[:<dir/>file.ckpt]`` into a file path or URI.

Implementations: :mod:`.memory` (in-process, for tests and demos), :mod:`.local` (MLflow
tracking store + local worker processes), and Azure ML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from himl_manifest.spec import RunSpec

# Run status, normalized across backends.
QUEUED = "queued"
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELLED})
ACTIVE = frozenset({QUEUED, RUNNING})

# Lifecycle state of a run record (mutable metadata).
LIVE = "active"
SUPERSEDED = "superseded"
ARCHIVED = "archived"

# Tags / properties every managed run carries (MLflow tags locally, Azure ML properties/tags).
TAG_PREFIX = "himl."
TAG_MANAGED = "himl.managed"
TAG_RUN_NAME = "himl.run_name"
TAG_EXPERIMENT = "himl.experiment"
TAG_SEED = "himl.seed"
TAG_SPEC_HASH = "himl.spec_hash"
TAG_SPEC = "himl.spec"
TAG_ATTEMPT = "himl.attempt"
TAG_STATE = "himl.state"
TAG_RESUME_FROM = "himl.resume_from"
TAG_MANIFEST = "himl.manifest_path"
TAG_OUTPUT_DIR = "himl.output_dir"
TAG_PID = "himl.pid"
TAG_HOST = "himl.host"
TAG_ERROR = "himl.error_tail"
TAG_PROVENANCE = "himl.provenance."  # prefix: himl.provenance.commit, .branch, ...


@dataclass(frozen=True)
class RunRecord:
    """What the store says about one attempt of one run."""

    run_name: str  # the deterministic name: the idempotency key
    run_id: str  # the backend's own id (MLflow run id, Azure ML job name)
    experiment: str
    seed: int
    spec_hash: str
    status: str
    spec: dict[str, Any]  # the seed's normalized spec as submitted (cosmetic fields included)
    attempt: int = 1
    state: str = LIVE
    manifest_path: str = ""
    resume_from: str | None = None
    has_checkpoint: bool = False
    output_dir: str | None = None
    pid: int | None = None
    host: str | None = None
    start_time: float | None = None  # seconds since the epoch
    end_time: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    error_tail: str = ""


@dataclass(frozen=True)
class Progress:
    """One progress event from a backend while it runs things (rendered on stderr by the CLI)."""

    run_name: str
    status: str
    message: str = ""


ProgressCallback = Callable[[Progress], None]


class Backend(Protocol):
    """The small interface every backend implements."""

    name: str

    def list_runs(self) -> list[RunRecord]:
        """Every managed run record (all attempts, all states), in one bulk read."""
        ...

    def submit(
        self,
        runs: Sequence[RunSpec],
        *,
        attempts: dict[str, int] | None = None,
        jobs: int = 1,
        progress: ProgressCallback | None = None,
    ) -> list[RunRecord]:
        """Create and start runs. ``attempts`` maps run names to the attempt number to create
        (default 1). Creating a (run name, attempt) that already exists with the same spec hash
        is success, not a duplicate. Returns the records as they stand afterwards."""
        ...

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        """Copy the cosmetic fields of ``run`` onto the existing run ``run_name`` in place."""
        ...

    def set_state(self, run_name: str, state: str) -> None:
        """Mark every attempt of ``run_name`` superseded or archived."""
        ...

    def resolve_checkpoint(self, reference: str) -> str:
        """``<run name or id>[:<dir/>file.ckpt]`` -> a local path or a URI the job can read."""
        ...
