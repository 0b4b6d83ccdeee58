"""`himl plan` as a core function: manifest paths + a backend -> a Plan.

Loads and validates the manifests (every problem of every file, as one ManifestError), expands
them into run specs, reads the store ONCE (``backend.list_runs()``), and calls the pure planner.
:func:`check_fresh` re-plans a saved plan's manifests against the store, for ``apply plan.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path
from typing import cast

from himl_manifest.backends.base import Backend
from himl_manifest.errors import StalePlanError, UsageError
from himl_manifest.plan.model import Action, Plan
from himl_manifest.plan.planner import plan as plan_runs
from himl_manifest.spec import RunSpec, canonical_json

DEFAULT_PATHS = ("experiments",)


def desired_runs(paths: Sequence[str | PathLike[str]]) -> list[RunSpec]:
    """The run specs the manifests under ``paths`` ask for (ManifestError when invalid)."""
    from himl_manifest.manifest.build import load_experiments
    from himl_manifest.spec import expand

    # absolute: diagnostics still show paths relative to the cwd, and a cwd change between two
    # plans in one process (tests, library use) cannot mix up cached repository roots
    experiments, _ = load_experiments([Path(p).absolute() for p in paths], allow_empty=True)
    return expand(experiments)


def make_plan(
    paths: Sequence[str | PathLike[str]],
    backend: Backend | Callable[[], Backend],
    *,
    retry_failed: bool = False,
    targets: Collection[str] | None = None,
) -> Plan:
    """Plan the manifests under ``paths`` against ``backend``'s run store (one bulk read).

    ``backend`` may be a function that opens one: it is called only once the manifests are
    valid, so invalid manifests are reported without creating or waiting for a store.
    ``plan.meta`` records what the plan was made from, so that :func:`check_fresh` can make it
    again: ``paths`` (as given), ``backend`` (its name), ``retry_failed`` and ``targets``.
    """
    paths = [str(p) for p in (paths or DEFAULT_PATHS)]
    desired = desired_runs(paths)  # first: a ManifestError opens no store
    backend = _opened(backend)
    # what the plan needs of the store: every active record, and of history only the attempts
    # of the runs it may submit
    observed = backend.list_runs(full=False, history_of={run.run_name for run in desired})
    if targets is not None:
        _check_targets(targets, desired, [r.experiment for r in observed])
    result = plan_runs(desired, observed, retry_failed=retry_failed, targets=targets)
    return replace(result, meta={**result.meta, "paths": paths, "backend": backend.name})


def _opened(backend: Backend | Callable[[], Backend]) -> Backend:
    """``backend`` itself, or the backend that the function ``backend`` opens."""
    if callable(backend) and not hasattr(backend, "list_runs"):
        return backend()
    return cast("Backend", backend)


def check_fresh(plan: Plan, backend: Backend) -> None:
    """Raise StalePlanError unless re-planning ``plan.meta["paths"]`` against ``backend`` now
    gives the same fingerprint (same desired runs, same observed records, same options)."""
    made_with = plan.meta.get("backend")
    if made_with is not None and made_with != backend.name:
        raise StalePlanError(
            f"the saved plan was made against the {made_with!r} backend, not {backend.name!r}"
        )
    paths = plan.meta.get("paths")
    if not paths:
        raise StalePlanError("the saved plan does not say which manifests it was made from")
    targets = plan.meta.get("targets")
    fresh = make_plan(
        paths,
        backend,
        retry_failed=bool(plan.meta.get("retry_failed", False)),
        targets=None if targets is None else list(targets),
    )
    if fresh.fingerprint != plan.fingerprint:
        raise StalePlanError(
            "the saved plan is stale: the manifests or the runs changed since it was made "
            f"({len(plan.actions)} actions planned then); run `himl plan` again"
        )
    # The fingerprint covers what the plan was made from, not the file's own actions: the
    # actions made now must be the saved ones, run specs included (an edited plan is refused).
    saved = [_action_identity(a) for a in plan.actions]
    made = [_action_identity(a) for a in fresh.actions]
    if saved != made:
        pairs = zip(saved, made, strict=False)
        differing = next((s for s, m in pairs if s != m), None)
        if differing is None:  # one is a prefix of the other
            differing = saved[len(made)] if len(saved) > len(made) else made[len(saved)]
        raise StalePlanError(
            "the saved plan's actions are not what its manifests give now (it was edited after "
            f"`himl plan -o`?): first difference at {differing[0]} {differing[1]}; refused. "
            "Change the manifests and run `himl plan` again"
        )


def _action_identity(action: Action) -> tuple[object, ...]:
    """What applying an action does: its kind, run, the run's whole spec, what it supersedes."""
    run = action.run
    spec = None
    if run is not None:
        spec = (run.spec_hash, canonical_json(run.spec), run.resume_from, run.conda_sha256)
    return (
        str(action.kind),
        action.run_name,
        action.experiment,
        action.seed,
        action.previous,
        action.attempt,
        tuple(action.depends_on),
        action.manifest_path,
        spec,
    )


def _check_targets(
    targets: Collection[str], desired: Sequence[RunSpec], observed: Sequence[str]
) -> None:
    known = {run.experiment for run in desired} | set(observed)
    unknown = sorted(set(targets) - known)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise UsageError(f"--target {names}: no such experiment in the manifests or the run store")
