"""The neutral model every layer shares: run statuses, lifecycle states, action kinds, run
records, and the accessors of the spec fields several layers read.

Standard library only. ``plan/``, ``apply/``, ``backends/``, ``operations/`` and ``runner/``
import it; it imports none of them (an import-linter contract checks this).

- :class:`RunStatus`: where a run attempt is in its execution (queued ... completed).
- :class:`Lifecycle`: what the project thinks of a run record (active, superseded, archived).
  The two are separate axes: a superseded run may be completed or failed.
- :class:`ActionKind` / :class:`Health`: what the planner decides, and how an experiment fares.
- :class:`RunRecord`: what a run store says about one attempt of one run. Its spec is decoded
  only when something reads it (:attr:`RunRecord.spec`), so history costs next to nothing.
- :func:`cosmetic_view` / :func:`with_cosmetic`: the fields that change in place.
- :func:`seed_list`: a manifest's ``seeds`` as the list of seeds it means.
- :class:`CheckpointSource` / :func:`checkpoint_source` / :func:`split_run_reference`: the one
  parser of checkpoint sources.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any


class _StrEnum(str, Enum):
    """``enum.StrEnum`` (Python 3.11) for Python 3.10 as well: members are their values."""

    def __str__(self) -> str:
        return str(self.value)


# --- statuses, lifecycle, actions ----------------------------------------------------------------


class RunStatus(_StrEnum):
    """Execution status of one run attempt, normalized across backends."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: Statuses of an attempt that has not ended yet.
IN_PROGRESS = frozenset({RunStatus.QUEUED, RunStatus.RUNNING})
#: Statuses of an attempt that ended.
TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
#: Statuses the planner may retry.
UNSUCCESSFUL = frozenset({RunStatus.FAILED, RunStatus.CANCELLED})


class Lifecycle(_StrEnum):
    """Lifecycle state of a run record (mutable metadata; never a deletion)."""

    ACTIVE = "active"
    SUPERSEDED = "superseded"
    ARCHIVED = "archived"


class ActionKind(_StrEnum):
    """What the planner decides for one run (DESIGN.md decision 3)."""

    CREATE = "create"
    KEEP = "keep"
    UPDATE = "update"
    REPLACE = "replace"
    RESUME = "resume"
    RETRY = "retry"
    WAIT = "wait"
    ORPHAN = "orphan"


#: Kinds that change something when applied (orphans only with --prune).
CHANGING = frozenset(
    {ActionKind.CREATE, ActionKind.UPDATE, ActionKind.REPLACE, ActionKind.RESUME, ActionKind.RETRY}
)
#: Kinds that submit a run (a new run, or a new attempt of one).
SUBMITTING = frozenset({ActionKind.CREATE, ActionKind.REPLACE, ActionKind.RESUME, ActionKind.RETRY})


class Health(_StrEnum):
    """Health of an experiment, the second axis beside "in sync"."""

    HEALTHY = "healthy"
    RUNNING = "running"
    FAILED = "failed"
    NONE = "none"


def parse_enum(kind: type[_StrEnum], value: object, what: str) -> Any:
    """``value`` as a member of ``kind``; ValueError naming the allowed values otherwise."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise ValueError(f"unknown {what} {value!r}: expected one of {allowed}") from None


# --- run records ----------------------------------------------------------------------------------

#: The error tail an executor gives an attempt whose process could not be started.
NEVER_STARTED = "never started: "


def _flag(value: object) -> bool | None:
    """A stored yes/no (``True``, ``"true"``, ``"True"``); None when not recorded."""
    if value is None or value == "":
        return None
    return str(value).lower() == "true"


@dataclass(frozen=True)
class Provenance:
    """What a run records of where it came from, typed: a view of its stored facts (every
    store keeps them as text under ``himl.provenance.*``; :meth:`of` reads them back)."""

    head_commit: str | None = None
    branch: str | None = None
    remote_url: str | None = None
    #: The commit that last changed the run's manifest; None when unknown (then ``unknown_why``).
    manifest_commit: str | None = None
    manifest_commit_unknown: str | None = None
    manifest_blob: str | None = None
    #: The manifest, and the whole work tree, had uncommitted changes at apply time.
    dirty: bool | None = None
    worktree_dirty: bool | None = None
    applied_by: str | None = None
    applied_by_source: str | None = None
    applied_at: str | None = None
    ci_run_url: str | None = None
    tool_version: str | None = None
    schema_version: str | None = None
    #: The command line of an imperative run (`himl-runner --cluster`), in place of a manifest.
    command: str | None = None

    @classmethod
    def of(cls, facts: Mapping[str, Any]) -> Provenance:
        def text(key: str) -> str | None:
            value = facts.get(key)
            return str(value) if value not in (None, "") else None

        names = [f for f in cls.__dataclass_fields__ if f not in ("dirty", "worktree_dirty")]
        return cls(
            **{name: text(name) for name in names},
            dirty=_flag(facts.get("dirty")),
            worktree_dirty=_flag(facts.get("worktree_dirty")),
        )

    @property
    def commit(self) -> str | None:
        """The commit the run's manifest was at: its last change, else HEAD at apply."""
        return self.manifest_commit or self.head_commit


@dataclass(frozen=True)
class RunRecord:
    """What a run store says about one attempt of one run.

    ``spec_source`` is the seed's normalized spec as submitted (cosmetic fields included): the
    spec itself, or the run-spec JSON text it is decoded from on first read of :attr:`spec`.
    """

    run_name: str  # the deterministic name: the idempotency key
    run_id: str  # the backend's own id (MLflow run id, Azure ML job name)
    experiment: str
    seed: int
    spec_hash: str
    status: RunStatus
    spec_source: Mapping[str, Any] | str = field(repr=False)
    #: The cross-validation fold the run trains (``crossval_index``); None without folds.
    fold: int | None = None
    attempt: int = 1
    state: Lifecycle = Lifecycle.ACTIVE
    manifest_path: str = ""
    resume_from: str | None = None
    has_checkpoint: bool = False
    output_dir: str | None = None
    pid: int | None = None
    host: str | None = None
    start_time: float | None = None  # seconds since the epoch: the record was created (queued)
    end_time: float | None = None
    #: When the run's process started (recorded by the local executor; None: not recorded).
    #: Queue time is ``run_start_time - start_time``, run time ``end_time - run_start_time``.
    run_start_time: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    provenance: dict[str, str] = field(default_factory=dict)
    error_tail: str = ""
    #: Where a person can see the run (Azure ML: its studio page); None when there is none.
    url: str | None = None

    @cached_property
    def spec(self) -> dict[str, Any]:
        """The seed's spec (decoded from the stored run-spec JSON on first use)."""
        source = self.spec_source
        if isinstance(source, str):
            payload: Any = json.loads(source)
            inner: Any = payload.get("spec") if isinstance(payload, dict) else None
            return dict(inner) if isinstance(inner, dict) else {}
        return dict(source)

    @property
    def conda_sha256(self) -> str | None:
        """The conda file digest the run was submitted with (None: no conda file or unknown)."""
        return self.provenance.get("conda_sha256") or None

    @cached_property
    def source(self) -> Provenance:
        """Its provenance, typed (:class:`Provenance`)."""
        return Provenance.of(self.provenance)

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS

    @property
    def never_started(self) -> bool:
        """The attempt ended before its process started: it spends no ``retry.max_attempts``."""
        return self.status == RunStatus.CANCELLED and self.error_tail.startswith(NEVER_STARTED)


# --- cosmetic fields ------------------------------------------------------------------------------

#: Top-level fields that are cosmetic: changing them updates runs in place.
COSMETIC_TOP = ("description", "tags")
#: Fields inside ``tracking`` that are cosmetic.
COSMETIC_TRACKING = ("display_name",)
#: Top-level fields that are policy for apply: neither identity nor cosmetic metadata.
POLICY_TOP = ("retry",)


def cosmetic_view(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The cosmetic fields of a spec: description, tags, tracking.display_name."""
    view = {key: spec[key] for key in COSMETIC_TOP if key in spec}
    tracking = spec.get("tracking") or {}
    shown = {key: tracking[key] for key in COSMETIC_TRACKING if key in tracking}
    if shown:
        view["tracking"] = shown
    return view


def without_cosmetic(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` without its cosmetic and policy fields (a shallow copy)."""
    out = {k: v for k, v in spec.items() if k not in (*COSMETIC_TOP, *POLICY_TOP)}
    if "tracking" in out:
        out["tracking"] = {
            k: v for k, v in (out["tracking"] or {}).items() if k not in COSMETIC_TRACKING
        }
    return out


def with_cosmetic(spec: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with the cosmetic fields of ``source`` (present ones copied, absent removed)."""
    out: dict[str, Any] = json.loads(json.dumps(spec))
    for key in COSMETIC_TOP:
        if key in source:
            out[key] = json.loads(json.dumps(source[key]))
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


# --- what a run on a cluster must fit -----------------------------------------------------------

#: Azure ML's limits on a job ("service limits", Runs): run id and display name, description,
#: the value of one tag or property, and the number of each.
SERVICE_MAX_NAME = 256
SERVICE_MAX_DESCRIPTION = 5000
SERVICE_MAX_VALUE = 1000
SERVICE_MAX_TAGS = 50
#: A manifest's tags on a cluster run: each is written twice (``himl.tag.<key>`` when the job
#: is submitted, ``<key>`` by the runner in the job), beside up to 18 of the tool's own, the
#: service's and the runner's (source, status, checkpoints): 16 keep a job under 50.
CLUSTER_MAX_MANIFEST_TAGS = 16
#: The longest attempt suffix a job name carries (``-a<N>``; ``retry.max_attempts`` <= 99).
ATTEMPT_SUFFIX_MAX = len("-a99")


# --- seeds ----------------------------------------------------------------------------------------

#: The seeds of a manifest that names none (the schema's default: keep them equal, a test checks).
DEFAULT_SEEDS = (42,)


def seed_list(seeds: Any) -> list[int]:
    """The seeds a manifest's ``seeds`` means: a count N is 0..N-1; absent is the default."""
    if isinstance(seeds, bool):
        return list(DEFAULT_SEEDS)
    if isinstance(seeds, int):
        return list(range(seeds))
    if isinstance(seeds, (list, tuple)):
        return [int(seed) for seed in seeds]
    return list(DEFAULT_SEEDS)


# --- fields a manifest sets itself ------------------------------------------------------------

#: The one list of container fields a manifest sets from sections of its own, each with the
#: manifest key that sets it: every field of ``LightningContainer`` that is not a trainer option
#: (tests/runner/test_params_rule.py holds them equal). ``params`` may name none of them, nor a
#: trainer option: ``params: {max_epochs: 50}`` would silently win over ``trainer:``, and
#: ``params: {src_checkpoint_trusted: true}`` would unpickle a checkpoint nobody marked trusted.
#: `himl validate` refuses them, the runner refuses a run spec that sets one anyway, and the
#: runner's imperative form never writes one into ``params``.
WORKFLOW_FIELDS: dict[str, str] = {
    "random_seed": "seeds",
    "different_seeds": "seeds",
    "src_checkpoint": "checkpoint.source",
    "src_checkpoint_sha256": "checkpoint.source.sha256",
    "src_checkpoint_trusted": "checkpoint.source.trusted",
    "resume_training": "checkpoint.resume",
    "run_inference_only": "mode: inference",
    "azure_datasets": "datasets[].azure",
    "local_datasets": "datasets[].local",
    "dataset_mountpoints": "datasets[].mountpoint",
    "experiment": "tracking.experiment",
    "tag": "tracking.display_name",
    "log_from_vm": "tracking.log_from_vm",
    "crossval_count": "crossval.folds",
    "crossval_index": "crossval.indices",
}


# --- checkpoint sources ---------------------------------------------------------------------------

#: The checkpoint file a run reference without a path means, in the run's checkpoints folder.
DEFAULT_CHECKPOINT_FILE = "last.ckpt"


@dataclass(frozen=True)
class CheckpointSource:
    """A manifest's ``checkpoint.source``, parsed: exactly one kind is set.

    - ``path``: a file in the repository; ``url`` (+ ``sha256``): an https download;
    - ``run``: a run reference ``<run>[:<dir/>file.ckpt]``;
    - ``experiment`` (+ ``seed``, ``file``): a run of another experiment of the repository;
      ``run`` is then the resolved upstream run name once expansion filled it in.
    """

    kind: str  # "path" | "url" | "run" | "experiment"
    path: str | None = None
    url: str | None = None
    sha256: str | None = None
    #: ``url`` only: the user marked it trusted (unpickled in full, which can run code).
    trusted: bool = False
    run: str | None = None
    experiment: str | None = None
    seed: int | None = None
    file: str = DEFAULT_CHECKPOINT_FILE

    @property
    def run_name(self) -> str | None:
        """The run this source reads a checkpoint of (run references and resolved experiments)."""
        return split_run_reference(self.run)[0] if self.run else None

    def run_reference(self) -> str | None:
        """``<run>:<file>`` for a resolved experiment source, the reference for a run source."""
        if self.kind == "experiment":
            return f"{self.run}:{self.file}" if self.run else None
        return self.run


def checkpoint_source(spec: Mapping[str, Any]) -> CheckpointSource | None:
    """The parsed ``checkpoint.source`` of a (normalized or raw) spec; None when it has none
    or it is not a mapping of one known kind (validation reports that)."""
    checkpoint = spec.get("checkpoint")
    source = checkpoint.get("source") if isinstance(checkpoint, Mapping) else None
    if not isinstance(source, Mapping):
        return None
    if isinstance(source.get("experiment"), str):
        seed = source.get("seed")
        run = source.get("run")
        return CheckpointSource(
            "experiment",
            experiment=source["experiment"],
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
            file=str(source.get("file") or DEFAULT_CHECKPOINT_FILE),
            run=run if isinstance(run, str) else None,
        )
    if isinstance(source.get("path"), str):
        return CheckpointSource("path", path=source["path"])
    if isinstance(source.get("url"), str):
        sha = source.get("sha256")
        return CheckpointSource(
            "url",
            url=source["url"],
            sha256=sha if isinstance(sha, str) else None,
            trusted=source.get("trusted") is True,
        )
    if isinstance(source.get("run"), str):
        return CheckpointSource("run", run=source["run"])
    return None


def split_run_reference(reference: str) -> tuple[str, str]:
    """``<run>[:<path>]`` -> ``(run, path)`` (path ``""`` when absent)."""
    run, _, path = reference.strip().partition(":")
    return run, path
