"""Every fault of the service ends in a clear error or a correct retry: never a duplicate job,
never a traceback (each error is a StoreError/CheckpointError with a message that says what
to do)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from server import FakeWorkspace, MakeRuns, backend_of, client_of

from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.backends.azureml.workspace import Timeouts
from himl_manifest.backends.base import SubmissionStopped, SubmitOutcome
from himl_manifest.errors import StoreError

FAST = Timeouts(connect_s=1.0, deadline_s=1.0, retries=1)


def fast_backend(workspace: FakeWorkspace, project: Path) -> AzureMLBackend:
    return backend_of(workspace, project, timeouts=FAST)  # type: ignore[no-any-return]


def test_401_asks_to_sign_in(workspace: FakeWorkspace, project: Path) -> None:
    workspace.fail("GET", "/jobs$", 401)
    with pytest.raises(StoreError, match="az login") as info:
        fast_backend(workspace, project).list_runs()
    assert "401" in str(info.value) and "Traceback" not in str(info.value)


def test_403_names_the_missing_role(workspace: FakeWorkspace, project: Path) -> None:
    workspace.fail("GET", "/jobs$", 403)
    with pytest.raises(StoreError, match="role"):
        fast_backend(workspace, project).list_runs()


def test_a_failing_credential_says_what_was_tried(workspace: FakeWorkspace, project: Path) -> None:
    from azure.core.exceptions import ClientAuthenticationError

    class NoCredential:
        def get_token(self, *scopes: str, **kwargs: object) -> object:
            raise ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included "
                "credentials.\nAttempted credentials:\n\tEnvironmentCredential: unavailable\n"
                "\tAzureCliCredential: Please run 'az login' to set up an account"
            )

    backend = backend_of(workspace, project, credential=NoCredential())
    with pytest.raises(StoreError) as info:
        backend.list_runs()
    message = str(info.value)
    assert "az login" in message and "EnvironmentCredential" in message
    assert not workspace.requests  # no request left without a token


def test_a_vanished_job_while_waiting_is_an_error(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    backend.submit([run])
    workspace.fail("GET", f"jobs/{run.run_name}$", 404)
    with pytest.raises(StoreError, match="gone"):
        backend.wait([run.run_name])


def test_409_on_submit_reads_the_job_and_compares_identities(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns, project: Path
) -> None:
    (run,) = make_runs()
    backend.submit([run])
    workspace.fail("PUT", f"jobs/{run.run_name}$", 409, code="Conflict", message="exists")
    (again,) = backend_of(workspace, project).submit([run])
    assert again.outcome == SubmitOutcome.EXISTED
    assert workspace.created == [run.run_name]


def test_429_with_retry_after_is_retried(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    runs = make_runs()
    backend.submit(runs)
    workspace.fail("GET", "/jobs$", 429, retry_after=0.2)
    started = time.monotonic()
    assert len(backend.list_runs()) == 1
    assert time.monotonic() - started >= 0.2
    assert workspace.faults[-1].hits == 1


@pytest.mark.parametrize("status", [500, 503])
def test_a_server_error_on_submit_is_retried_without_a_duplicate(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns, status: int
) -> None:
    (run,) = make_runs()
    workspace.fail("PUT", f"jobs/{run.run_name}$", status)
    (outcome,) = backend.submit([run])
    assert outcome.outcome == SubmitOutcome.CREATED
    assert workspace.created == [run.run_name]


def test_a_persistent_server_error_is_a_clear_error(
    workspace: FakeWorkspace, project: Path
) -> None:
    workspace.fail("GET", "/jobs$", 500, times=10)
    with pytest.raises(StoreError, match="answered 500"):
        fast_backend(workspace, project).list_runs()


def test_a_lost_reply_to_a_submission_is_success_and_one_job(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    workspace.fail("PUT", f"jobs/{run.run_name}$", drop=True, after=True)
    (outcome,) = backend.submit([run])
    assert outcome.outcome == SubmitOutcome.EXISTED  # the retried PUT found it: same identity
    assert outcome.record is not None and outcome.record.spec_hash == run.spec_hash
    assert workspace.created == [run.run_name]


def test_a_dropped_connection_on_a_read_is_retried(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    backend.submit(make_runs())
    workspace.fail("GET", "/jobs$", drop=True)
    assert len(backend.list_runs()) == 1


def test_a_hung_service_is_one_deadline_not_retries_of_it(
    workspace: FakeWorkspace, project: Path
) -> None:
    """One overall deadline per call: the answer that never comes within it is asked for once,
    not once per retry (the transport alone waited 60 s per attempt, 252 s in all), and the
    message says it timed out, not that the service could not be reached."""
    fault = workspace.fail("GET", "/jobs$", delay_s=3.0, times=5)
    with pytest.raises(StoreError, match=r"timed out: .* did not answer within the deadline"):
        fast_backend(workspace, project).list_runs()
    assert fault.hits == 1


def test_an_unreachable_service_is_a_clear_error_in_seconds(
    workspace: FakeWorkspace, project: Path
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workspace.url = f"https://127.0.0.1:{port}"
    backend = AzureMLBackend(
        client_of(workspace, timeouts=FAST), root=project, code=lambda: "unused"
    )
    with pytest.raises(StoreError, match="could not reach"):
        backend.list_runs()


def test_a_malformed_job_in_a_listing_is_skipped(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    backend.submit([run])
    broken = {
        "id": "x/jobs/broken",
        "name": "broken",
        "type": "Microsoft.MachineLearningServices/workspaces/jobs",
        "properties": {
            "jobType": "Command",
            "status": "Completed",
            "properties": {"himl.managed": "true", "himl.run_name": "broken", "himl.seed": "x"},
            "tags": {},
        },
    }
    workspace.add_raw_job(broken)
    assert [r.run_name for r in backend.list_runs()] == [run.run_name]
    (warning,) = backend.read_warnings()  # skipped, and named
    assert "Azure ML job broken" in warning and "himl.seed" in warning


def test_a_refused_job_is_a_clear_error(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    workspace.fail("PUT", "jobs/", 400, code="UserError", message="Compute gpu-cluster not found")
    with pytest.raises(SubmissionStopped, match="gpu-cluster not found") as stopped:
        backend.submit([run])
    assert stopped.value.not_sent == [run.run_name] and stopped.value.submitted == []
    assert isinstance(stopped.value.cause, StoreError)
    assert workspace.created == []


def test_a_job_of_a_type_the_sdk_does_not_know_does_not_break_the_listing(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """azure-ai-ml 1.35's own ``jobs.list`` fails the whole listing on such a job ("Unsupported
    job type"); the backend reads the listing as JSON, so the runs beside it stay visible and
    a job of ours is read whatever its type."""
    (run,) = make_runs()
    backend.submit([run])
    (ours,) = [job for job in workspace.jobs.values() if job["name"] == run.run_name]
    workspace.add_raw_job(
        {
            "name": "odd",
            "properties": {"jobType": "NoSuchType", "properties": {"himl.managed": "1"}},
        }
    )
    workspace.add_raw_job(
        {**ours, "name": "odd-but-ours", "properties": {**ours["properties"], "jobType": "Sweep2"}}
    )
    listed = sorted((r.run_name, r.run_id) for r in backend.list_runs())
    assert listed == sorted([(run.run_name, run.run_name), (run.run_name, "odd-but-ours")])


def test_ctrl_c_half_way_through_a_batch_says_what_was_accepted(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    runs = make_runs(seeds=[0, 1, 2])
    send = backend.client.jobs.create_or_update
    sent: list[str] = []

    def ctrl_c_on_the_second(job: object, **kwargs: object) -> object:
        if sent:
            raise KeyboardInterrupt
        sent.append(str(getattr(job, "name", "")))
        return send(job, **kwargs)

    backend.client.jobs.create_or_update = ctrl_c_on_the_second
    with pytest.raises(SubmissionStopped) as stopped:
        backend.submit(runs)
    assert stopped.value.interrupted
    assert [s.run_name for s in stopped.value.submitted] == sent == [runs[0].run_name]
    assert stopped.value.not_sent == [runs[1].run_name, runs[2].run_name]
    assert workspace.created == sent
