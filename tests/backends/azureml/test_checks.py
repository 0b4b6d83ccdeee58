"""Pre-flight against the workspace (backends/azureml/checks.py): the computes, data assets,
datastores and upstream checkpoints a batch needs are asked of the workspace before anything
is uploaded or sent, and every problem comes back at once, in validate's format."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from server import FakeWorkspace, MakeRuns

from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.diagnostics import Diagnostic, render_text
from himl_manifest.errors import StoreError
from himl_manifest.operations.apply import preflight as apply_preflight
from himl_manifest.operations.plan import make_plan


def errors(found: list[Diagnostic]) -> dict[str, str]:
    return {d.path: d.message for d in found if d.severity == "error"}


def nothing_sent(workspace: FakeWorkspace) -> bool:
    return not workspace.created and not workspace.calls("POST", "startPendingUpload")


def test_a_missing_cluster_is_named_with_the_ones_there_are(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    found = backend.preflight(make_runs(compute={"target": "gpu-clustr"}))
    message = errors(found)["compute.target"]
    assert "no compute named 'gpu-clustr'" in message and "did you mean 'gpu-cluster'?" in message
    (problem,) = [d for d in found if d.path == "compute.target"]
    assert "cpu-cluster, gpu-cluster" in problem.hint
    assert nothing_sent(workspace)


def test_the_cluster_must_fit_nodes_devices_and_accelerator(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    workspace.add_compute("small-gpus", vm_size="Standard_NC6s_v3", max_nodes=2)
    runs = make_runs(
        compute={"target": "small-gpus", "num_nodes": 4, "instance_type": "Standard_ND96asr_v4"},
        trainer={"devices": 4, "accelerator": "gpu"},
    )
    found = errors(backend.preflight(runs))
    assert found["compute.num_nodes"] == "4 nodes, but cluster 'small-gpus' scales to at most 2"
    assert "has the fixed VM size Standard_NC6s_v3" in found["compute.instance_type"]
    assert "4 processes per node, but Standard_NC6s_v3" in found["trainer.devices"]
    assert "has 1 GPU" in found["trainer.devices"]
    cpu = errors(
        backend.preflight(
            make_runs("cpu", compute={"target": "cpu-cluster"}, trainer={"accelerator": "gpu"})
        )
    )
    assert "has no GPU" in cpu["trainer.accelerator"]


def test_data_assets_versions_and_datastores_must_exist(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    workspace.add_data("panda", ["1", "2"])
    runs = make_runs(
        datasets=[
            {"azure": "panda:3"},
            {"azure": "tiles"},
            {"datastore": "archive", "path": "x"},
            {"datastore": "workspaceblobstore", "path": "ok"},
            {"azure": "panda:2"},
        ]
    )
    found = errors(backend.preflight(runs))
    assert found == {
        "datasets[0].azure": "data asset 'panda' has no version '3'",
        "datasets[1].azure": (
            "no data asset named 'tiles' in Azure ML workspace test-ws (resource group test-rg)"
        ),
        "datasets[2].datastore": (
            "no datastore named 'archive' in Azure ML workspace test-ws (resource group test-rg)"
        ),
    }
    assert nothing_sent(workspace)


def test_an_unversioned_data_asset_is_pinned_to_its_latest(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """The regression: ``azure: tiles`` failed with an empty message. Its latest version is
    resolved (once: by pre-flight, then used by the submission) and the job names it."""
    workspace.add_data("tiles", ["1", "4"])
    (run,) = make_runs(datasets=[{"azure": "tiles"}])
    assert errors(backend.preflight([run])) == {}
    backend.submit([run])
    job = workspace.jobs[run.run_name]["properties"]
    assert job["inputs"]["dataset_0"]["uri"].endswith("/data/tiles/versions/4")
    assert len(workspace.calls("GET", r"/data/tiles$")) == 1


def test_a_missing_upstream_checkpoint_is_found_before_anything_is_sent(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs(checkpoint={"source": {"run": "pretrain-s0-0123abcd"}})
    found = backend.preflight([run])
    assert "no run 'pretrain-s0-0123abcd'" in errors(found)["checkpoint.source"]
    # a run this apply submits (or one still going) will exist: no problem
    assert errors(backend.preflight([run], expected={"pretrain-s0-0123abcd"})) == {}


def test_every_problem_at_once_at_its_line(
    backend: AzureMLBackend, workspace: FakeWorkspace, project: Path
) -> None:
    (project / "experiments" / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "himl/v1",
                "kind": "Experiment",
                "name": "bad",
                "container": "fake.HelloWorld",
                "environment": {"image": "mcr.microsoft.com/azureml/x:latest"},
                "datasets": [{"azure": "nothere:1"}],
                "compute": {"target": "nocluster"},
            },
            sort_keys=False,
        ),
        encoding="utf-8",
    )
    plan = make_plan([project / "experiments"], backend)
    found = apply_preflight(plan, backend, project)
    text = render_text(found, 1)
    assert "experiments/bad.yaml:10:11: compute.target: no compute named 'nocluster'" in text
    assert "experiments/bad.yaml:8:10: datasets[0].azure: no data asset named 'nothere'" in text
    assert nothing_sent(workspace)


def test_a_workspace_that_cannot_be_asked_stops_everything(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    workspace.fail("GET", r"/computes/", 403, times=5)
    with pytest.raises(StoreError, match="access denied"):
        backend.preflight(make_runs())
    assert nothing_sent(workspace)


def test_each_resource_is_asked_once(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    workspace.add_data("panda", ["3"])
    runs = make_runs(seeds=[0, 1, 2], datasets=[{"azure": "panda:3"}])
    assert errors(backend.preflight(runs)) == {}
    assert len(workspace.calls("GET", r"/computes/gpu-cluster$")) == 1
    assert len(workspace.calls("GET", r"/data/panda/versions/3$")) == 1


def test_an_unknown_unversioned_data_asset_says_so_when_submitted_directly(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """Without pre-flight (a direct submit), the SDK's framed error becomes its one line."""
    (run,) = make_runs(datasets=[{"azure": "tiles"}])
    with pytest.raises(StoreError) as info:
        backend.submit([run])
    message = str(info.value)
    assert message.endswith("Asset tiles does not exist in workspace test-ws.")
    assert "resolving data asset tiles@latest" in message and "\x1b" not in message
    assert nothing_sent(workspace)


def test_a_kubernetes_compute_or_an_unknown_size_is_not_second_guessed(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    workspace.add_compute("aks", vm_size="Standard_NC6s_v3", max_nodes=1, type="Kubernetes")
    workspace.add_compute("odd", vm_size="Standard_Unlisted_v9", max_nodes=4)
    for target in ("aks", "odd"):
        runs = make_runs(
            target,
            compute={"target": target, "num_nodes": 2, "instance_type": "x"}
            if target == "aks"
            else {"target": target},
            trainer={"devices": 8},
        )
        assert errors(backend.preflight(runs)) == {}, target


def test_a_source_left_unresolved_is_the_offline_checks_to_report(
    backend: AzureMLBackend, make_runs: MakeRuns
) -> None:
    from dataclasses import replace

    (run,) = make_runs()
    broken = replace(run, spec={**run.spec, "checkpoint": {"source": {"experiment": "gone"}}})
    found = backend.preflight([broken])
    assert [d.message for d in found if "was not resolved" in d.message]  # once, offline
    assert "checkpoint.source" not in errors(found)


def test_what_only_improves_a_message_never_stops_pre_flight(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """The computes to suggest and the GPUs of a VM size are asked best-effort: a workspace
    that refuses those lists still gets its real checks."""
    workspace.fail("GET", r"/computes$", 403, times=5)
    workspace.fail("GET", r"/vmSizes$", 500, times=20)
    found = errors(backend.preflight(make_runs(compute={"target": "nope"})))
    assert found["compute.target"].startswith("no compute named 'nope'")
    assert errors(backend.preflight(make_runs("fine", trainer={"devices": 8}))) == {}
