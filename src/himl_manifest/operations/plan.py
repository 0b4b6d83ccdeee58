"""`himl plan` as a core function: manifest paths + a backend -> a Plan.

Loads and validates the manifests (every problem of every file, as one ManifestError), expands
them into run specs, reads the store ONCE (``backend.list_runs()``), and calls the pure planner.
:func:`check_fresh` re-plans a saved plan's manifests against the store, for ``apply plan.json``.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from os import PathLike
from pathlib import Path

from himl_manifest.backends.base import Backend
from himl_manifest.errors import StalePlanError, UsageError
from himl_manifest.model import RunRecord
from himl_manifest.plan.model import Action, Plan
from himl_manifest.plan.planner import plan as plan_runs
from himl_manifest.spec import RunSpec, canonical_json

DEFAULT_PATHS = ("experiments",)


def desired_runs(
    paths: Sequence[str | PathLike[str]], *, warnings: list[str] | None = None
) -> list[RunSpec]:
    """The run specs the manifests under ``paths`` ask for (ManifestError when invalid); what
    the user should know about their code (uncommitted changes, ...) goes to ``warnings``."""
    from himl_manifest.manifest.build import load_experiments
    from himl_manifest.spec import expand

    # absolute: diagnostics still show paths relative to the cwd, and a cwd change between two
    # plans in one process (tests, library use) cannot mix up cached repository roots
    experiments, _ = load_experiments([Path(p).absolute() for p in paths], allow_empty=True)
    return expand(experiments, warnings=warnings)


@dataclass(frozen=True)
class Desired:
    """What the manifests under ``paths`` ask for: their run specs, and what the user should
    know about their code (uncommitted changes, ...)."""

    paths: list[str]
    runs: list[RunSpec]
    warnings: list[str]


def load(paths: Sequence[str | PathLike[str]]) -> Desired:
    """Load, validate and expand the manifests under ``paths`` (ManifestError: every problem of
    every file). First in every plan: invalid manifests are reported before any store is
    opened or created."""
    chosen = [str(p) for p in (paths or DEFAULT_PATHS)]
    warnings: list[str] = []
    return Desired(chosen, desired_runs(chosen, warnings=warnings), warnings)


def make_plan(
    paths: Sequence[str | PathLike[str]],
    backend: Backend,
    *,
    retry_failed: bool = False,
    targets: Collection[str] | None = None,
    replace_runs: Sequence[str] = (),
) -> Plan:
    """Plan the manifests under ``paths`` against ``backend``'s run store (one bulk read):
    :func:`load`, then :func:`plan_against`."""
    return plan_against(
        load(paths),
        backend,
        retry_failed=retry_failed,
        targets=targets,
        replace_runs=replace_runs,
    )


def plan_against(
    desired: Desired,
    backend: Backend,
    *,
    retry_failed: bool = False,
    targets: Collection[str] | None = None,
    replace_runs: Sequence[str] = (),
) -> Plan:
    """Plan ``desired`` against ``backend``'s run store (one bulk read).

    ``replace_runs`` (``--replace``): run names, experiments or ``experiment:seed`` that get a
    new run whatever the plan would say; one that names nothing is a UsageError.
    ``plan.meta`` records what the plan was made from, so that :func:`check_fresh` can make it
    again: ``paths`` (as given), ``backend`` (its name), ``retry_failed``, ``targets`` and
    ``replace``.
    """
    paths, runs = desired.paths, desired.runs
    warnings = list(desired.warnings)
    # what the plan needs of the store: every active record, and of history only the attempts
    # of the runs it may submit
    observed = backend.list_runs(full=False, history_of={run.run_name for run in runs})
    warnings += backend.read_warnings()
    observed = within_paths(observed, paths, runs)
    if targets is not None:
        _check_targets(targets, runs, [r.experiment for r in observed])
    forced = replace_keys(replace_runs, runs, observed)
    result = plan_runs(
        runs,
        observed,
        retry_failed=retry_failed,
        targets=targets,
        forced=forced,
        warnings=warnings,
    )
    meta = {**result.meta, "paths": paths, "backend": backend.name}
    if replace_runs:
        meta["replace"] = sorted(set(replace_runs))
    return replace(result, meta=meta)


def replace_keys(
    references: Sequence[str], desired: Sequence[RunSpec], observed: Sequence[RunRecord]
) -> set[tuple[str, int]]:
    """The (experiment, seed) pairs ``--replace`` references name: an experiment (every seed),
    ``experiment:seed``, or a run name (a desired run, or a live run of a desired seed).

    A reference that names none of them is a UsageError with a did-you-mean hint."""
    from himl_manifest.diagnostics import did_you_mean
    from himl_manifest.model import Lifecycle, split_run_reference

    keys = {(run.experiment, run.seed) for run in desired}
    by_experiment: dict[str, set[tuple[str, int]]] = {}
    for key in keys:
        by_experiment.setdefault(key[0], set()).add(key)
    by_name = {run.run_name: (run.experiment, run.seed) for run in desired}
    for record in observed:
        key = (record.experiment, record.seed)
        if record.state == Lifecycle.ACTIVE and key in keys:
            by_name.setdefault(record.run_name, key)
    forced: set[tuple[str, int]] = set()
    for reference in references:
        name, seed_text = split_run_reference(reference)
        if name in by_name and not seed_text:
            forced.add(by_name[name])
            continue
        if name in by_experiment and not seed_text:
            forced |= by_experiment[name]
            continue
        if name in by_experiment and seed_text.strip().isdigit():
            key = (name, int(seed_text))
            if key in keys:
                forced.add(key)
                continue
            seeds = ", ".join(str(s) for _, s in sorted(by_experiment[name]))
            raise UsageError(f"--replace {reference!r}: {name} has no seed {seed_text} ({seeds})")
        candidates = [*by_experiment, *(f"{e}:{s}" for e, s in keys), *by_name]
        hint = did_you_mean(reference, candidates)
        raise UsageError(
            f"--replace {reference!r}: no run, experiment or experiment:seed of that name in the "
            "manifests" + (f" ({hint})" if hint else "")
        )
    return forced


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
        replace_runs=[str(r) for r in plan.meta.get("replace") or ()],
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


def within_paths(
    observed: Sequence[RunRecord],
    paths: Sequence[str | PathLike[str]],
    desired: Sequence[RunSpec],
) -> list[RunRecord]:
    """The records a plan of the manifests under ``paths`` judges: those of the experiments it
    wants, and those whose manifest lies under ``paths`` or no longer exists (they may be
    orphans). A run of a manifest that still exists outside ``paths`` belongs to another plan:
    `himl plan experiments/a.yaml` never calls the runs of ``experiments/b.yaml`` orphans."""
    from himl_manifest.paths import project_root

    # manifest paths are recorded relative to the root of the repository that holds them
    anchor = Path(paths[0]).absolute() if paths else Path.cwd()
    root = project_root(anchor if anchor.is_dir() else anchor.parent)
    prefixes = []
    for path in paths:
        try:
            prefixes.append(Path(path).absolute().resolve().relative_to(root).as_posix())
        except ValueError:  # outside the repository: its manifests' runs are matched by name
            continue
    wanted = {run.experiment for run in desired}

    def judged(manifest: str) -> bool:
        if any(
            prefix == "." or manifest == prefix or manifest.startswith(f"{prefix}/")
            for prefix in prefixes
        ):
            return True
        return not (root / manifest).exists()

    # a run with no manifest (`himl-runner`'s imperative form) belongs to no plan: never an
    # orphan, never replaced
    return [
        r
        for r in observed
        if r.manifest_path and (r.experiment in wanted or judged(r.manifest_path))
    ]
