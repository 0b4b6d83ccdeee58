"""Builders for planner tests: experiments without files, records, and a tiny apply loop.

The apply loop is the test's own executor over a MemoryBackend (the real one is ``apply/``):
submit what a plan submits, update metadata, supersede what a new run replaces, archive orphans.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.manifest.build import normalize
from himl_manifest.model import SUBMITTING, ActionKind, Lifecycle, RunRecord, RunStatus
from himl_manifest.plan.model import Plan
from himl_manifest.spec import Experiment, RunSpec, expand

#: A root without environment.yml: runs have no conda digest, and nothing is read from disk.
ROOT = Path("/nonexistent/himl-plan-tests")


def manifest(name: str = "exp", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": name,
        "container": "HelloWorld",
        "seeds": [0],
        "trainer": {"max_epochs": 10},
    }
    doc.update(fields)
    return doc


def experiment(name: str = "exp", *, root: Path = ROOT, **fields: Any) -> Experiment:
    return Experiment(
        name=name,
        spec=normalize(manifest(name, **fields)),
        manifest_path=f"experiments/{name}.yaml",
        root=root,
    )


def runs(*experiments: Experiment) -> list[RunSpec]:
    return expand(experiments)


def run_of(name: str = "exp", seed: int = 0, **fields: Any) -> RunSpec:
    """The one run of a one-experiment manifest, for seed ``seed``."""
    fields.setdefault("seeds", [seed])
    return next(r for r in runs(experiment(name, **fields)) if r.seed == seed)


def record(
    run: RunSpec,
    status: str = RunStatus.COMPLETED,
    *,
    attempt: int = 1,
    state: str = Lifecycle.ACTIVE,
    has_checkpoint: bool = True,
    start_time: float | None = None,
    resume_from: str | None = None,
) -> RunRecord:
    """The record a backend would hold after submitting ``run``."""
    return RunRecord(
        run_name=run.run_name,
        run_id=f"id-{run.run_name}-{attempt}",
        experiment=run.experiment,
        seed=run.seed,
        spec_hash=run.spec_hash,
        status=status,
        spec_source=dict(run.spec),
        attempt=attempt,
        state=state,
        manifest_path=run.manifest_path,
        resume_from=resume_from,
        has_checkpoint=has_checkpoint,
        start_time=start_time,
        provenance={"conda_sha256": run.conda_sha256 or ""},
    )


def apply_plan(plan: Plan, backend: MemoryBackend, *, prune: bool = True) -> None:
    """Execute ``plan`` on ``backend``: the minimal executor the planner's contract implies."""
    for action in plan.actions:
        if action.kind in SUBMITTING:
            assert action.run is not None
            backend.submit([action.run], attempts={action.run_name: action.attempt})
            backend.wait([action.run_name])
        elif action.kind == ActionKind.UPDATE:
            assert action.run is not None
            backend.update_metadata(action.run_name, action.run)
        elif action.kind == ActionKind.ORPHAN and prune:
            backend.set_state(action.run_name, Lifecycle.ARCHIVED)
        if action.kind in (*SUBMITTING, ActionKind.UPDATE) and action.previous not in (
            None,
            action.run_name,
        ):
            assert action.previous is not None
            backend.set_state(action.previous, Lifecycle.SUPERSEDED)


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(a.kind, a.run_name) for a in plan.actions]


def names(items: Iterable[RunSpec]) -> list[str]:
    return [r.run_name for r in items]
