"""`himl-runner --cluster=NAME`: the flags become run specs and jobs, as a manifest's would.

The runner goes through the real path (flags parsed, container built, run specs expanded,
:class:`AzureMLBackend` submitting them); the backend is the loopback workspace's (server.py),
so azure-ai-ml itself makes every request, and the tests read the jobs the server holds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from server import CONDA_FILE, FakeWorkspace, MakeRuns, backend_of, spec_of

from himl_manifest.errors import ConfigError
from himl_manifest.runner import submit, tracking
from himl_manifest.runner.cli import main, parse_args
from himl_manifest.runner.execute import execute

HELLO = "himl_manifest.configs.hello_world.HelloWorld"


@pytest.fixture
def cluster(
    workspace: FakeWorkspace, project: Path, monkeypatch: pytest.MonkeyPatch
) -> FakeWorkspace:
    """The runner, started in ``project``, submits to the loopback workspace."""
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (project / "environment.yml").write_text(CONDA_FILE, encoding="utf-8")
    backends: list[Any] = []

    def open_backend(root: Path, config: str | None) -> Any:
        backend = backend_of(workspace, root)
        backends.append(backend)
        return backend

    monkeypatch.setattr(submit, "open_cluster_backend", open_backend)
    workspace.backends = backends  # type: ignore[attr-defined]
    return workspace


def _run(*flags: str) -> list[Any]:
    settings = parse_args(list(flags))
    assert settings is not None
    return execute(settings)


def _props(job: dict[str, Any]) -> dict[str, Any]:
    return dict(job["properties"])


def test_different_seeds_submit_one_job_per_seed(cluster: FakeWorkspace, project: Path) -> None:
    flags = (
        "--model=HelloWorld",
        "--cluster=gpu-cluster",
        "--different_seeds=3",
        "--num_nodes=2",
        "--docker_shm_size=16g",
        "--max_epochs=2",
        "--learning_rate=0.05",
        "--debug_ddp=DETAIL",
        "--tag=mine",
        "--azure_datasets=panda:3,workspaceblobstore/datasets/hello",
        "--mount_in_azureml",
    )
    cluster.add_data("panda", ["3"])  # pre-flight asks the workspace for it
    before = os.environ.get("TORCH_DISTRIBUTED_DEBUG")
    results = _run(*flags)
    assert len(results) == 3 and all(r.ok for r in results)
    # --debug_ddp reaches the jobs, and never leaks into this process: a later DDP run in it
    # would inherit DETAIL (with which gloo DDP on CPU crashes in torch 2.13)
    assert os.environ.get("TORCH_DISTRIBUTED_DEBUG") == before
    assert len(cluster.created) == 3  # jobs, not a sweep
    jobs = {name: _props(cluster.jobs[name]) for name in cluster.created}
    seeds = sorted(int(job["properties"]["himl.seed"]) for job in jobs.values())
    assert seeds == [0, 1, 2]
    for name, job in jobs.items():
        seed = int(job["properties"]["himl.seed"])
        assert name.startswith(f"helloworld-s{seed}-")
        assert job["properties"]["himl.run_name"] == name
        assert job["properties"]["himl.container"] == HELLO
        assert job["displayName"] == f"mine seed {seed}"
        assert job["experimentName"] == "HelloWorld"
        assert job["computeId"].endswith("gpu-cluster")
        assert job["resources"]["instanceCount"] == 2
        assert job["resources"]["shmSize"] == "16g"
        assert job["distribution"]["distributionType"] == "PyTorch"
        assert job["distribution"]["processCountPerInstance"] == 1
        assert job["environmentVariables"]["TORCH_DISTRIBUTED_DEBUG"] == "DETAIL"
        assert job["tags"]["himl.tag.commandline_args"] == " ".join(flags)
        assert job["tags"]["himl.tag.tag"] == "mine"
        inputs = job["inputs"]
        assert inputs["dataset_0"]["uri"].endswith("/data/panda/versions/3")
        assert inputs["dataset_0"]["mode"] == "ReadOnlyMount"
        assert inputs["dataset_1"]["uri"] == (
            "azureml://datastores/workspaceblobstore/paths/datasets/hello"
        )
        spec = spec_of(cluster.jobs[name])
        assert spec["seed"] == seed
        assert spec["trainer"] == {"accelerator": "auto", "devices": "auto", "max_epochs": 2}
        assert spec["params"] == {"learning_rate": 0.05}
        assert spec["runner"]["debug_ddp"] == "DETAIL"
        assert spec["compute"] == {"num_nodes": 2, "shm_size": "16g", "target": "gpu-cluster"}
        environment = json.loads(job["environmentVariables"]["HIML_RUN_SPEC"])
        assert environment["run_name"] == name
    assert {r.run_id for r in results} == set(jobs)
    assert {r.label for r in results} == {"mine seed 0", "mine seed 1", "mine seed 2"}


def test_each_invocation_submits_a_new_job_with_provenance(
    cluster: FakeWorkspace, project: Path
) -> None:
    """The reference's behaviour: the same command again (after a code change, say) trains
    again. Each job carries the repository's provenance and no manifest, so no plan calls it
    an orphan."""
    flags = ("--model=HelloWorld", "--cluster=gpu-cluster", "--max_epochs=1")
    [first] = _run(*flags)
    [again] = _run(*flags)
    assert first.ok and again.ok
    assert first.run_id != again.run_id
    assert cluster.created == [first.run_id, again.run_id]
    for record in backend_of(cluster, project).list_runs():
        assert record.manifest_path == ""
        assert record.provenance["command"].startswith("himl-runner --model=HelloWorld")
        assert record.provenance["applied_by"] and record.provenance["worktree_dirty"] == "true"


def test_flags_and_a_manifest_make_the_same_run(
    cluster: FakeWorkspace, project: Path, make_runs: MakeRuns
) -> None:
    """The spec hash (the run's identity) of the flags is the manifest's."""
    [from_manifest] = make_runs(
        "helloworld",
        container=HELLO,
        seeds=[7],
        trainer={"max_epochs": 3},
        compute={"target": "gpu-cluster"},
        environment={},
    )
    settings = parse_args(
        ["--model=HelloWorld", "--cluster=gpu-cluster", "--random_seed=7", "--max_epochs=3"]
    )
    assert settings is not None
    from himl_manifest.runner.execute import build_container

    [from_flags] = submit.cluster_runs(settings, build_container(settings), project)
    assert from_flags.spec_hash == from_manifest.spec_hash
    assert from_flags.run_name == from_manifest.run_name


def test_wait_for_completion_waits_for_the_jobs(cluster: FakeWorkspace) -> None:
    results = _run(
        "--model=HelloWorld",
        "--cluster=gpu-cluster",
        "--different_seeds=2",
        "--max_epochs=1",
        "--wait_for_completion",
    )
    assert [r.ok for r in results] == [True, True]
    for name in cluster.created:
        assert cluster.jobs[name]["properties"]["status"] == "Completed"


def test_wait_for_completion_reports_a_failed_job(cluster: FakeWorkspace) -> None:
    cluster.outcome = lambda job: "Failed"
    [result] = _run(
        "--model=HelloWorld", "--cluster=gpu-cluster", "--max_epochs=1", "--wait_for_completion"
    )
    assert not result.ok
    assert "simulated failure" in result.error


def test_without_waiting_the_jobs_are_left_queued(cluster: FakeWorkspace) -> None:
    [result] = _run("--model=HelloWorld", "--cluster=gpu-cluster", "--max_epochs=1")
    assert result.ok
    assert cluster.jobs[result.run_id]["properties"]["status"] == "NotStarted"


def test_the_command_line_reports_the_jobs(
    cluster: FakeWorkspace, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--model=HelloWorld", "--cluster=gpu-cluster", "--different_seeds=2"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for name in cluster.created:
        assert f"Azure ML job: {name}" in out
    assert "run folder" not in out


def test_log_from_vm_with_a_cluster_is_refused(cluster: FakeWorkspace) -> None:
    with pytest.raises(ConfigError, match="log_from_vm"):
        _run("--model=HelloWorld", "--cluster=gpu-cluster", "--log_from_vm")
    assert cluster.created == []


def test_a_checkpoint_outside_the_project_is_refused(
    cluster: FakeWorkspace, tmp_path: Path
) -> None:
    outside = tmp_path.parent / "elsewhere.ckpt"
    outside.write_bytes(b"x")
    with pytest.raises(ConfigError, match="outside the project"):
        _run("--model=HelloWorld", "--cluster=gpu-cluster", f"--src_checkpoint={outside}")
    assert cluster.created == []


def test_log_from_vm_reads_the_workspaces_tracking_uri(
    workspace: FakeWorkspace, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the override, --log_from_vm asks the workspace for its MLflow tracking URI."""
    from server import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, WS_PATH, client_of

    from himl_manifest.backends.azureml import workspace as workspace_module

    monkeypatch.delenv(tracking.LOG_FROM_VM_URI_ENV, raising=False)
    monkeypatch.setenv("AZUREML_SUBSCRIPTION_ID", SUBSCRIPTION)
    monkeypatch.setenv("AZUREML_RESOURCE_GROUP", RESOURCE_GROUP)
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", WORKSPACE)
    client = client_of(workspace)
    monkeypatch.setattr(workspace_module, "ml_client", lambda found, **_: client)
    uri = tracking.log_from_vm_uri(project)
    # what the SDK makes of the workspace's mlFlowTrackingUri
    assert uri is not None and uri.startswith("azureml://westeurope.api.azureml.ms/mlflow/")
    assert uri.endswith(WS_PATH)
    assert workspace.calls("GET", f"{WORKSPACE}$")


def test_imperative_jobs_are_never_orphans(
    cluster: FakeWorkspace, project: Path, make_runs: MakeRuns
) -> None:
    """A `himl-runner --cluster` job comes from no manifest: a plan of the project's manifests
    neither calls it an orphan (nor would --prune archive it) nor replaces it."""
    from himl_manifest.operations.plan import make_plan

    (result,) = _run("--model=HelloWorld", "--cluster=gpu-cluster", "--max_epochs=1")
    assert result.ok
    make_runs("managed")  # one manifest of the project
    plan = make_plan([project / "experiments"], backend_of(cluster, project))
    assert [a.kind for a in plan.actions] == ["create"]
    assert all(a.run_name != result.run_id for a in plan.actions)


def test_the_runner_gets_pre_flight_before_anything_is_sent(
    cluster: FakeWorkspace, project: Path
) -> None:
    with pytest.raises(ConfigError, match="pre-flight found problems"):
        _run("--model=HelloWorld", "--cluster=no-such-cluster", "--max_epochs=1")
    assert cluster.created == [] and not cluster.calls("POST", "startPendingUpload")
