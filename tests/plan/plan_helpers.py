"""Builders for planner tests: experiments without files, records, and applying a plan.

A plan is applied by the real executor (:func:`himl_manifest.apply.execute.execute`), over a
MemoryBackend here and over the real backends in tests/apply/test_convergence.py: a test-only
executor that behaved differently once hid a plan that did not settle.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from himl_manifest.apply.execute import ApplyResult
from himl_manifest.backends.base import Backend
from himl_manifest.manifest.build import normalize
from himl_manifest.model import CHANGING, Lifecycle, RunRecord, RunStatus
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


def apply_plan(plan: Plan, backend: Backend, *, prune: bool = True) -> ApplyResult:
    """Execute ``plan`` on ``backend`` as `himl apply --yes [--prune]` does."""
    from himl_manifest.apply.execute import execute

    return execute(plan, backend, prune=prune)


def unsettled(again: Plan, applied: ApplyResult) -> list[tuple[str, str, str]]:
    """The changes of the plan made right after an apply, but those the apply said it left for
    the next one (runs deferred behind an upstream that has not completed yet) and those the
    plan itself says are blocked (their upstream failed for good)."""
    return [
        (str(a.kind), a.run_name, a.reason)
        for a in again.actions
        if a.kind in CHANGING and not a.blocked and a.run_name not in applied.deferred
    ]


def kinds(plan: Plan) -> list[tuple[str, str]]:
    return [(a.kind, a.run_name) for a in plan.actions]


def names(items: Iterable[RunSpec]) -> list[str]:
    return [r.run_name for r in items]
