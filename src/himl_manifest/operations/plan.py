"""`himl plan` as a core function: manifest paths + a backend -> a Plan.

Loads and validates the manifests (every problem of every file, as one ManifestError), expands
them into run specs, reads the store ONCE (``backend.list_runs()``), and calls the pure planner.
:func:`check_fresh` re-plans a saved plan's manifests against the store, for ``apply plan.json``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from os import PathLike
from pathlib import Path

from himl_manifest.backends.base import Backend
from himl_manifest.errors import StalePlanError, UsageError
from himl_manifest.plan.model import Plan
from himl_manifest.plan.planner import plan as plan_runs
from himl_manifest.spec import RunSpec

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
    backend: Backend,
    *,
    retry_failed: bool = False,
    targets: Collection[str] | None = None,
) -> Plan:
    """Plan the manifests under ``paths`` against ``backend``'s run store (one bulk read).

    ``plan.meta`` records what the plan was made from, so that :func:`check_fresh` can make it
    again: ``paths`` (as given), ``backend`` (its name), ``retry_failed`` and ``targets``.
    """
    paths = [str(p) for p in (paths or DEFAULT_PATHS)]
    desired = desired_runs(paths)
    observed = backend.list_runs(full=False)
    if targets is not None:
        _check_targets(targets, desired, [r.experiment for r in observed])
    result = plan_runs(desired, observed, retry_failed=retry_failed, targets=targets)
    return replace(result, meta={**result.meta, "paths": paths, "backend": backend.name})


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


def _check_targets(
    targets: Collection[str], desired: Sequence[RunSpec], observed: Sequence[str]
) -> None:
    known = {run.experiment for run in desired} | set(observed)
    unknown = sorted(set(targets) - known)
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise UsageError(f"--target {names}: no such experiment in the manifests or the run store")
