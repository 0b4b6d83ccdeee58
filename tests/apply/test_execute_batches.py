"""apply/execute.py: no run starts without its input, and one executor's failure holds back no
other's runs.

In-memory executors stand for the two kinds: one that runs its jobs only while apply waits
(local processes) and one whose jobs go on without it (Azure ML). A run whose checkpoint comes
from a run of the same apply is deferred unless one executor that runs both here orders them;
it is submitted in a later batch once its upstream completed (``wait``), else left for the next
apply; a failed upstream blocks it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from himl_manifest.apply.execute import execute
from himl_manifest.backends.base import Capabilities, SubmissionStopped, Submitted
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.backends.registry import AZUREML, LOCAL, placement
from himl_manifest.backends.routed import RoutedBackend
from himl_manifest.errors import StoreError
from himl_manifest.manifest.build import normalize
from himl_manifest.model import ActionKind, RunStatus
from himl_manifest.plan.planner import plan as plan_runs
from himl_manifest.plan.render import render_text
from himl_manifest.spec import Experiment, RunSpec, expand

ROOT = Path("/nonexistent/himl-execute-tests")


class Remote(MemoryBackend):
    """Jobs that go on without apply (accepted as queued; they end when waited for)."""

    name = "remote"
    capabilities = Capabilities(waits_locally=False, multi_node=True)


class Refusing(Remote):
    """The service accepts ``accept`` jobs of a batch, then refuses one (or Ctrl-C arrives)."""

    def __init__(self, accept: int, cause: BaseException) -> None:
        super().__init__()
        self.accept, self.cause = accept, cause

    def submit(
        self, runs: Sequence[RunSpec], *, attempts: Mapping[str, int] | None = None
    ) -> list[Submitted]:
        done = super().submit(runs[: self.accept], attempts=attempts)
        raise SubmissionStopped(done, [r.run_name for r in runs[self.accept :]], self.cause)


def experiments(*documents: dict[str, Any]) -> list[RunSpec]:
    found = []
    for fields in documents:
        doc = {
            "apiVersion": "himl/v1",
            "kind": "Experiment",
            "container": "HelloWorld",
            "seeds": [0],
            "trainer": {"max_epochs": 2},
            **fields,
        }
        found.append(
            Experiment(doc["name"], normalize(doc), f"experiments/{doc['name']}.yaml", ROOT)
        )
    return expand(found)


def cluster(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "compute": {"target": "gpu-cluster"}, **fields}


#: A checkpoint source naming the `pretrain` experiment's run.
FROM_PRETRAIN: dict[str, Any] = {"checkpoint": {"source": {"experiment": "pretrain"}}}


def routed(local: MemoryBackend | None = None, remote: MemoryBackend | None = None) -> Any:
    return RoutedBackend(
        {LOCAL: local or MemoryBackend(), AZUREML: remote or Remote()}, route_of=placement
    )


def plan_and_execute(
    backend: Any, desired: list[RunSpec], **kwargs: Any
) -> tuple[Any, dict[str, RunSpec]]:
    plan = plan_runs(desired, backend.list_runs())
    return execute(plan, backend, **kwargs), {run.experiment: run for run in desired}


def test_a_dependent_cluster_run_is_deferred_until_its_upstream_completed() -> None:
    remote = Remote()
    backend = routed(remote=remote)
    desired = experiments(cluster("pretrain"), cluster("finetune", **FROM_PRETRAIN))
    plan = plan_runs(desired, backend.list_runs())
    by = {a.experiment: a for a in plan.actions}
    assert by["finetune"].depends_on == (by["pretrain"].run_name,)
    assert f"waits for {by['pretrain'].run_name}" in render_text(plan)

    result = execute(plan, backend)
    assert result.deferred == {by["finetune"].run_name: (by["pretrain"].run_name,)}
    assert [r.experiment for r in remote.records()] == ["pretrain"]  # finetune never sent
    assert result.ok and "1 deferred (waiting for their upstream run)" in result.summary_line()
    assert "1 submitted" in result.summary_line() and "still running" not in result.summary_line()

    # the upstream completes; the next apply submits the dependent
    remote.finish(by["pretrain"].run_name, RunStatus.COMPLETED)
    again = plan_runs(desired, backend.list_runs())
    (create,) = [a for a in again.actions if a.kind == ActionKind.CREATE]
    assert create.experiment == "finetune" and not create.depends_on
    second = execute(again, backend)
    assert not second.deferred and second.done[ActionKind.CREATE] == [create.run_name]


def test_with_wait_the_dependent_is_submitted_once_its_upstream_completed() -> None:
    remote = Remote()
    desired = experiments(cluster("pretrain"), cluster("finetune", **FROM_PRETRAIN))
    result, runs = plan_and_execute(routed(remote=remote), desired, wait=True)
    assert not result.deferred and result.ok
    assert result.outcomes == {
        runs["pretrain"].run_name: RunStatus.COMPLETED,
        runs["finetune"].run_name: RunStatus.COMPLETED,
    }
    assert result.waited


def test_a_failed_upstream_blocks_its_dependent() -> None:
    remote = Remote()
    desired = experiments(cluster("pretrain"), cluster("finetune", **FROM_PRETRAIN))
    remote.set_outcome(desired[0].run_name, RunStatus.FAILED)
    result, runs = plan_and_execute(routed(remote=remote), desired, wait=True)
    finetune = runs["finetune"].run_name
    assert result.blocked == {finetune: f"upstream run {runs['pretrain'].run_name} ended failed"}
    assert not result.ok and "1 blocked (upstream failed)" in result.summary_line()
    assert [r.experiment for r in remote.records()] == ["pretrain"]


def test_the_plan_blocks_a_dependent_whose_upstream_failed_for_good() -> None:
    remote = Remote()
    backend = routed(remote=remote)
    desired = experiments(
        cluster("pretrain", retry={"on_failure": False}), cluster("finetune", **FROM_PRETRAIN)
    )
    remote.submit(desired[:1])
    remote.finish(desired[0].run_name, RunStatus.FAILED)
    plan = plan_runs(desired, backend.list_runs())
    (finetune,) = [a for a in plan.actions if a.experiment == "finetune"]
    assert finetune.kind == ActionKind.CREATE and "retries spent" in finetune.blocked
    assert "blocked: upstream run" in render_text(plan)
    result = execute(plan, backend)
    assert finetune.run_name in result.blocked and not result.ok
    assert len(remote.records()) == 1  # nothing submitted


def test_one_executor_that_runs_both_here_orders_them_itself() -> None:
    local = MemoryBackend()
    desired = experiments({"name": "pretrain"}, {"name": "finetune", **FROM_PRETRAIN})
    result, _ = plan_and_execute(routed(local=local), desired)
    assert not result.deferred and set(result.outcomes.values()) == {RunStatus.COMPLETED}
    assert len(local.records()) == 2


def test_a_cluster_run_after_a_local_upstream_goes_once_the_local_one_completed() -> None:
    remote = Remote()
    desired = experiments({"name": "pretrain"}, cluster("finetune", **FROM_PRETRAIN))
    result, runs = plan_and_execute(routed(remote=remote), desired)
    assert not result.deferred  # the local run was waited for anyway: a second batch
    assert result.outcomes[runs["pretrain"].run_name] == RunStatus.COMPLETED
    assert result.outcomes[runs["finetune"].run_name] == RunStatus.QUEUED
    assert result.not_waited == {runs["finetune"].run_name}


def test_a_cluster_failure_does_not_hold_back_the_local_runs() -> None:
    local = MemoryBackend()
    remote = Refusing(accept=1, cause=StoreError("Compute gpu-cluster not found"))
    desired = experiments({"name": "here"}, cluster("there", seeds=[0, 1]))
    result, runs = plan_and_execute(routed(local=local, remote=remote), desired)
    assert result.outcomes[runs["here"].run_name] == RunStatus.COMPLETED  # ran, and was waited for
    there = sorted(r.run_name for r in desired if r.experiment == "there")
    assert len(result.not_sent) == 1 and result.not_sent[0] in there
    assert "Compute gpu-cluster not found" in result.stopped and not result.ok
    assert "1 not sent" in result.summary_line()


def test_ctrl_c_during_submission_says_what_was_accepted() -> None:
    remote = Refusing(accept=1, cause=KeyboardInterrupt())
    local = MemoryBackend()
    desired = experiments(cluster("there", seeds=[0, 1, 2]), {"name": "here"})
    result, runs = plan_and_execute(routed(local=local, remote=remote), desired)
    assert result.interrupted and len(result.not_sent) == 3  # two cluster runs and the local one
    assert runs["here"].run_name in result.not_sent
    assert len([n for n in result.outcomes]) == 1  # the one accepted job
    assert not local.records()


def test_without_a_stop_a_missing_outcome_is_still_an_error() -> None:
    class Forgetful(Remote):
        def submit(self, runs: Sequence[RunSpec], **kwargs: Any) -> list[Submitted]:
            return []

    with pytest.raises(StoreError, match="no outcome"):
        plan_and_execute(routed(remote=Forgetful()), experiments(cluster("there")))
