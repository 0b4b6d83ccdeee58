"""Plans as values: what should happen to each run, and why.

Action kinds (:class:`himl_manifest.model.ActionKind`, DESIGN.md decision 3):

==========  ======  ==========================================================================
kind        symbol  meaning
==========  ======  ==========================================================================
create      ``+``   no run with this identity exists: submit it
keep        ``=``   the run exists, in sync and healthy: nothing to do
update      ``~``   only cosmetic fields changed: update the run's metadata in place
replace     ``-/+`` a run-affecting field (or the code) changed, or ``--replace``: a new run
resume      ``>``   only max_epochs grew and the old run has a checkpoint: a new run continues
retry       ``!``   same identity, but the latest attempt failed or was cancelled
wait        ``…``   the run is queued or running: nothing to do now
orphan      ``?``   a run whose manifest or seed is gone: reported; archived with ``--prune``
==========  ======  ==========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from himl_manifest.model import CHANGING, ActionKind, Health, RunStatus
from himl_manifest.spec import RunSpec

#: Version of the saved-plan / ``plan --format json`` document.
PLAN_FORMAT_VERSION = 1

SYMBOLS = {
    ActionKind.CREATE: "+",
    ActionKind.KEEP: "=",
    ActionKind.UPDATE: "~",
    ActionKind.REPLACE: "-/+",
    ActionKind.RESUME: ">",
    ActionKind.RETRY: "!",
    ActionKind.WAIT: "…",
    ActionKind.ORPHAN: "?",
}
#: Order of the kinds in summaries.
KIND_ORDER = (
    ActionKind.CREATE,
    ActionKind.REPLACE,
    ActionKind.RESUME,
    ActionKind.RETRY,
    ActionKind.UPDATE,
    ActionKind.WAIT,
    ActionKind.ORPHAN,
    ActionKind.KEEP,
)


@dataclass(frozen=True)
class FieldChange:
    """One field that differs between the observed run and the manifest."""

    path: str  # dotted, e.g. "trainer.max_epochs"
    old: Any
    new: Any


@dataclass(frozen=True)
class Action:
    """What to do about one (experiment, seed), and why."""

    kind: ActionKind
    experiment: str
    seed: int
    run_name: str  # the desired run's name; for an orphan, the orphaned run's name
    reason: str
    changes: tuple[FieldChange, ...] = ()
    run: RunSpec | None = None  # the desired run (absent for orphans)
    previous: str | None = None  # the observed run this action relates to (replace/resume/...)
    attempt: int = 1  # the attempt a create/retry makes
    depends_on: tuple[str, ...] = ()  # run names whose checkpoints this run needs first
    #: Why this run cannot be submitted at all (its upstream run failed for good); "" if it can.
    blocked: str = ""
    manifest_path: str = ""
    #: Status of the latest attempt of the observed run this action is about (None: no run).
    observed_status: RunStatus | None = None


@dataclass(frozen=True)
class ExperimentStatus:
    """The two separate axes reported per experiment: in sync or not, and health."""

    experiment: str
    in_sync: bool
    health: Health
    manifest_path: str = ""


@dataclass(frozen=True)
class Plan:
    """A pure value: the actions, in execution order, and what they were planned from."""

    actions: tuple[Action, ...]
    #: Fingerprint of the desired specs and observed records the plan was made from; applying a
    #: saved plan re-computes it and refuses a stale plan.
    fingerprint: str = ""
    experiments: tuple[ExperimentStatus, ...] = ()
    version: int = PLAN_FORMAT_VERSION
    meta: dict[str, Any] = field(default_factory=dict)
    #: What the user should know that is no action: code with uncommitted changes, code not
    #: committed, runs kept under an older identity. Shown by every renderer.
    warnings: tuple[str, ...] = ()

    def count(self, kind: ActionKind) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    @property
    def has_changes(self) -> bool:
        return any(a.kind in CHANGING or a.kind == ActionKind.ORPHAN for a in self.actions)
