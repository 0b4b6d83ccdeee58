"""The Azure ML backend over the loopback workspace: what it asks Azure ML, and what it makes
of the answers. (The shared behaviour is in tests/backends/test_contract.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from server import CODE_ID, FakeWorkspace, MakeRuns, backend_of

from himl_manifest.backends.azureml.jobs import build_command_job
from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.backends.base import Progress, SubmitOutcome
from himl_manifest.errors import CheckpointError
from himl_manifest.model import TERMINAL, Lifecycle, RunStatus
from himl_manifest.records import (
    AZUREML_TERMINAL,
    AZUREML_TO_STATUS,
    status_from_azureml,
)

ALL_STATUSES = [
    "NotStarted",
    "Queued",
    "Preparing",
    "Provisioning",
    "Starting",
    "Running",
    "Finalizing",
    "CancelRequested",
    "Completed",
    "Failed",
    "Canceled",
    "NotResponding",
    "Paused",
    "Unknown",
]


def test_every_azureml_status_is_mapped_and_terminal_ones_end() -> None:
    assert set(AZUREML_TO_STATUS) == set(ALL_STATUSES)
    for word in ALL_STATUSES:
        status = status_from_azureml(word)
        assert type(status) is RunStatus
        assert (status in TERMINAL) == (word in AZUREML_TERMINAL), word
    assert status_from_azureml("SomethingNew") == RunStatus.QUEUED


def test_listing_is_one_paged_read_whatever_the_number_of_manifests(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    runs = [run for name in ("a", "b", "c") for run in make_runs(name, seeds=[0, 1])]
    backend.submit(runs)
    workspace.requests.clear()
    records = backend.list_runs()
    assert sorted(r.run_name for r in records) == sorted(run.run_name for run in runs)
    assert {r.method for r in workspace.requests} == {"GET"}
    assert all(r.path.endswith("/jobs") for r in workspace.requests)  # no per-run GET
    views = [r.query["listViewType"][0] for r in workspace.requests]
    # 6 jobs, 2 per page; the JSON says which jobs are archived (``isArchived``): no second
    # listing of the archived ones
    assert views == ["All"] * 3
    assert all(r.query["properties"] == ["himl.managed"] for r in workspace.requests)
    assert "list-sdk" not in backend.calls  # the JSON read, not the SDK's entities


def test_the_sdk_listing_is_the_fallback_and_reads_the_same_records(
    backend: AzureMLBackend,
    workspace: FakeWorkspace,
    make_runs: MakeRuns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should azure-ai-ml's internals move, the public ``jobs.list`` (SDK entities, which do
    not say whether a job is archived: one more listing) gives the same records."""
    runs = [run for name in ("a", "b") for run in make_runs(name, seeds=[0, 1])]
    backend.submit(runs)
    backend.set_state(runs[0].run_name, Lifecycle.ARCHIVED)
    backend.set_state(runs[1].run_name, Lifecycle.SUPERSEDED)
    fast = {(r.run_name, r.state, r.status, r.spec_hash, r.url) for r in backend.list_runs()}
    from himl_manifest.backends.azureml import store

    monkeypatch.setattr(store, "json_pages", lambda *args: None)  # "internals moved"
    workspace.requests.clear()
    slow = {(r.run_name, r.state, r.status, r.spec_hash, r.url) for r in backend.list_runs()}
    assert slow == fast
    assert {state for _, state, *_ in fast} == {"archived", "superseded", "active"}
    assert backend.calls["list-sdk"] == 2
    assert "ArchivedOnly" in [r.query["listViewType"][0] for r in workspace.requests]


def test_a_submitted_job_carries_identity_as_properties_and_state_as_tags(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs(description="d", tags={"team": "x"})
    (outcome,) = backend.submit([run])
    assert outcome.outcome == SubmitOutcome.CREATED
    job = workspace.jobs[run.run_name]["properties"]
    assert job["properties"]["himl.spec_hash"] == run.spec_hash
    assert job["properties"]["himl.managed"] == "true"
    assert job["tags"]["himl.state"] == "active"
    assert job["computeId"].endswith("/computes/gpu-cluster")
    assert job["jobType"] == "Command"
    assert workspace.created == [run.run_name]
    assert outcome.record is not None and outcome.record.status == RunStatus.QUEUED


def test_the_node_sent_is_the_job_dumped(project: Path, make_runs: MakeRuns) -> None:
    """What ``jobs.create_or_update`` is given (the ``Command`` node) and the ``CommandJob``
    the offline tests dump are one job: nothing is lost between them."""
    from himl_manifest.backends.azureml.jobs import build_command_node, job_environment

    (project / "environment.yml").write_text("dependencies:\n  - python=3.11\n")
    (run,) = make_runs(compute={"target": "gpu-cluster", "num_nodes": 2}, trainer={"devices": 2})
    environment = job_environment(run, project)
    job = build_command_job(run, attempt=2, code=CODE_ID, root=project, environment=environment)
    node = build_command_node(run, attempt=2, code=CODE_ID, environment=environment)
    assert node._to_job()._to_dict() == job._to_dict()
    assert node.name == job.name and node.experiment_name == job.experiment_name == "hello"


def test_wait_polls_until_the_end_with_progress(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (ok,) = make_runs("ok")
    (bad,) = make_runs("bad", params={"behaviour": "fail"})
    backend.submit([ok, bad])
    events: list[Progress] = []
    records = {
        r.run_name: r for r in backend.wait([ok.run_name, bad.run_name], progress=events.append)
    }
    assert records[ok.run_name].status == RunStatus.COMPLETED
    assert records[bad.run_name].status == RunStatus.FAILED
    assert records[bad.run_name].error_tail == "simulated failure"
    seen = [e.message.rsplit(" ", 1)[-1] for e in events if e.run_name == ok.run_name]
    assert seen == ["Queued", "Running", "Completed"]


def test_a_job_that_ends_without_a_runner_record_still_has_an_error_tail(
    workspace: FakeWorkspace, project: Path, make_runs: MakeRuns
) -> None:
    workspace.on_finish = None
    backend = backend_of(workspace, project)
    (run,) = make_runs()
    workspace.outcomes[run.run_name] = "NotResponding"
    backend.submit([run])
    (record,) = backend.wait([run.run_name])
    assert record.status == RunStatus.FAILED
    assert "NotResponding" in record.error_tail and "ml.azure.com" in record.error_tail


def test_metadata_updates_the_job_in_place(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs(description="before", tags={"a": "1"})
    backend.submit([run])
    (edited,) = make_runs(description="after", tags={"b": "2"}, tracking={"display_name": "Nice"})
    backend.update_metadata(run.run_name, edited)
    job = workspace.jobs[run.run_name]["properties"]
    assert (job["displayName"], job["description"]) == ("Nice", "after")
    assert job["tags"]["himl.tag.b"] == "2"
    (record,) = backend.list_runs()
    assert record.spec["tags"] == {"b": "2"} and record.spec["description"] == "after"
    assert workspace.calls("PATCH", "/history/v1.0/") and not workspace.calls("PUT", "jobs/.*-a")


def test_archive_hides_the_job_and_deletes_nothing(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    backend.submit([run])
    backend.set_state(run.run_name, Lifecycle.ARCHIVED)
    job = workspace.jobs[run.run_name]["properties"]
    assert job["isArchived"] is True and job["tags"]["himl.state"] == "archived"
    assert not workspace.calls("DELETE", "")
    (record,) = backend.list_runs()
    assert record.state == Lifecycle.ARCHIVED
    backend.set_state(run.run_name, Lifecycle.ACTIVE)
    assert workspace.jobs[run.run_name]["properties"]["isArchived"] is False


def test_a_job_archived_by_hand_in_studio_lists_as_archived(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    backend.submit([run])
    workspace.jobs[run.run_name]["properties"]["isArchived"] = True
    (record,) = backend.list_runs()
    assert record.state == Lifecycle.ARCHIVED


def test_checkpoints_resolve_to_the_completed_attempt(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    workspace.outcomes[run.run_name] = "Completed"
    backend.submit([run])
    backend.submit([run], attempts={run.run_name: 2})
    workspace.finish(run.run_name, "Completed")
    workspace.finish(f"{run.run_name}-a2", "Failed")
    workspace.jobs[f"{run.run_name}-a2"]["properties"]["tags"]["himl.checkpoints"] = ""
    uri = backend.resolve_checkpoint(run.run_name)
    assert uri == (
        f"azureml://jobs/{run.run_name}/outputs/artifacts/paths/outputs/checkpoints/last.ckpt"
    )
    assert backend.resolve_checkpoint(f"{run.run_name}-a2:last.ckpt") == uri  # by job name
    with pytest.raises(CheckpointError, match=r"best\.ckpt"):
        backend.resolve_checkpoint(f"{run.run_name}:best.ckpt")


def test_a_job_without_a_runner_record_is_trusted_for_its_last_checkpoint_only_when_completed(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    workspace.on_finish = None
    (run,) = make_runs()
    backend.submit([run])
    workspace.finish(run.run_name, "Failed")
    with pytest.raises(CheckpointError):
        backend.resolve_checkpoint(run.run_name)
    workspace.finish(run.run_name, "Completed")
    assert backend.resolve_checkpoint(run.run_name).endswith("/checkpoints/last.ckpt")


def test_cancel_asks_azure_ml(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    backend.submit([run])
    backend.cancel([run.run_name])
    assert workspace.calls("POST", f"jobs/{run.run_name}/cancel")
    (record,) = backend.wait([run.run_name])
    assert record.status == RunStatus.CANCELLED


def test_jobs_written_by_earlier_versions_are_still_read(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """Before, the run spec was a property (``himl.spec``, over parts when long) and an
    in-place update laid its cosmetic view over it as JSON in ``himl.cosmetic``."""
    import json as _json

    (run,) = make_runs(description="old")
    backend.submit([run])
    job = workspace.jobs[run.run_name]["properties"]
    text = job["environmentVariables"].pop("HIML_RUN_SPEC")
    job["properties"].update({"himl.spec.0": text[:500], "himl.spec.1": text[500:]})
    job["properties"]["himl.spec.parts"] = "2"
    job["tags"]["himl.cosmetic"] = _json.dumps({"description": "renamed"})
    (record,) = backend.list_runs()
    assert record.spec_hash == run.spec_hash and record.spec["description"] == "renamed"
    assert record.spec["trainer"] == run.spec["trainer"]


def test_a_listing_without_job_definitions_reads_each_job_once(
    backend: AzureMLBackend,
    workspace: FakeWorkspace,
    make_runs: MakeRuns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (run,) = make_runs()
    backend.submit([run])
    listing = workspace._list_jobs

    def without_definitions(query: Any) -> Any:
        reply = listing(query)
        for job in reply.body["value"]:
            job["properties"].pop("environmentVariables", None)
        return reply

    monkeypatch.setattr(workspace, "_list_jobs", without_definitions)
    (record,) = backend.list_runs()
    assert record.spec == run.spec
    assert len(workspace.calls("GET", rf"/jobs/{run.run_name}$")) == 1


def test_a_name_taken_by_a_job_of_someone_else_is_a_conflict(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    workspace.jobs[run.run_name] = {
        "id": f"x/jobs/{run.run_name}",
        "name": run.run_name,
        "properties": {"jobType": "Command", "status": "Completed", "properties": {}, "tags": {}},
    }
    (outcome,) = backend.submit([run])
    assert outcome.outcome == SubmitOutcome.CONFLICT
    assert "a job himl-manifest did not make" in outcome.message


def test_the_backend_opens_the_workspace_the_project_names(
    workspace: FakeWorkspace, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from server import RESOURCE_GROUP, SUBSCRIPTION, WORKSPACE, FakeCredential

    (project / "config.json").write_text(
        f'{{"subscription_id": "{SUBSCRIPTION}", "resource_group": "{RESOURCE_GROUP}", '
        f'"workspace_name": "{WORKSPACE}"}}'
    )
    monkeypatch.setenv("AZUREML_DEV_URL_MFE", workspace.url)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(workspace.cert_file))
    for key in ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME"):
        monkeypatch.delenv(key, raising=False)
    backend = AzureMLBackend.open(project, credential=FakeCredential())
    assert backend.workspace is not None and backend.workspace.workspace_name == WORKSPACE
    assert backend.list_runs() == []
