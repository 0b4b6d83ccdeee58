"""`himl logs` of Azure ML jobs, for real: the SDK streams and downloads a job's logs from the
loopback workspace, the logs themselves lying in blob storage (Azurite).

``AzureMLBackend.job_log(job, follow=True)`` is ``jobs.stream(job)``: the SDK gets the job,
prints ``RunId:`` / ``Web View:``, then polls the run's details
(``GET /history/v1.0/.../runs/<job>/details``) until the job ends, fetching the log files the
details list (``logFiles``: SAS URLs of the blobs) and printing what each has grown by. With
``follow=False`` an ended job's default artifacts are downloaded (``jobs.download``): the SDK
gets the job, asks run history for the run's outputs (``POST /history/v1.0/.../rundata``),
finds none named and falls back to the artifact store
(``azureml://datastores/workspaceartifactstore/paths/ExperimentRun/dcid.<job>/``), gets that
datastore and its key (``POST .../datastores/workspaceartifactstore/listSecrets``) and
downloads the blobs from ``https://<account>.blob.core.windows.net``: the HTTPS proxy of
:meth:`FakeWorkspace.client_environment` leads that host to Azurite.

A job's logs are given with :meth:`FakeWorkspace.add_log` (now, or as the job reaches a
status); the SDK's polling interval (2 s at least) is set to 0.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from server import ARTIFACT_DATASTORE, BLOB_SUFFIX, WS_PATH, FakeWorkspace, MakeRuns, backend_of

from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.errors import StoreError

STD_LOG = "user_logs/std_log.txt"
RUNNER_LOG = "outputs/runner.log"


@pytest.fixture
def service(storage_workspace: FakeWorkspace, monkeypatch: pytest.MonkeyPatch) -> FakeWorkspace:
    """The workspace with blob storage, reachable as from a user's machine; no wait between
    the SDK's polls."""
    from azure.ai.ml.operations._run_history_constants import RunHistoryConstants

    for name, value in storage_workspace.client_environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(RunHistoryConstants, "_WAIT_COMPLETION_POLLING_INTERVAL_MIN", 0)
    monkeypatch.setattr(RunHistoryConstants, "_WAIT_COMPLETION_POLLING_INTERVAL_MAX", 0)
    return storage_workspace


@pytest.fixture
def logs_backend(service: FakeWorkspace, project: Path) -> AzureMLBackend:
    return backend_of(service, project)  # type: ignore[no-any-return]


@pytest.fixture
def job(logs_backend: AzureMLBackend, make_runs: MakeRuns) -> str:
    """A submitted job (NotStarted)."""
    (submitted,) = logs_backend.submit(make_runs())
    assert submitted.record is not None
    return submitted.record.run_id


def log_of(backend: AzureMLBackend, job: str, *, follow: bool) -> str:
    out = io.StringIO()
    backend.job_log(job, follow=follow, out=out)
    return out.getvalue()


def history(service: FakeWorkspace, method: str, tail: str) -> list[Any]:
    return service.calls(method, "^" + f"/history/v1.0{WS_PATH}" + tail + "$")


# --- follow: jobs.stream -----------------------------------------------------------------------


def test_follow_streams_the_log_as_it_grows_until_the_job_ends(
    logs_backend: AzureMLBackend, service: FakeWorkspace, job: str
) -> None:
    service.running_polls = 2  # two polls while it runs, then it completes
    service.add_log(job, STD_LOG, "installing the environment\n")
    service.add_log(job, STD_LOG, "epoch 0: loss 0.9\n", at="Running")
    service.add_log(job, STD_LOG, "epoch 1: loss 0.4\nTraining done.\n", at="Completed")

    text = log_of(logs_backend, job, follow=True)

    assert text.startswith(f"RunId: {job}\nWeb View: https://ml.azure.com/runs/{job}")
    body = text.split(f"Streaming {STD_LOG}\n", 1)[1]
    lines = [line for line in body.splitlines() if line and not line.startswith("=")]
    assert lines[:4] == [
        "installing the environment",
        "epoch 0: loss 0.9",
        "epoch 1: loss 0.4",
        "Training done.",
    ]
    assert text.count(f"Streaming {STD_LOG}") == 1  # what it had printed is not printed again
    assert "Execution Summary" in text
    assert service.jobs[job]["properties"]["status"] == "Completed"
    details = history(service, "GET", f"/runs/{job}/details")
    assert len(details) == 3  # Running, Running, Completed: polled until the end, not beyond
    assert {r.authorization for r in details} == {"Bearer fake-token"}
    # the log was read from storage twice (while running, then once more as it ended)
    reads = [r for r in service.blob_requests if r.blob.endswith(STD_LOG) and r.method == "GET"]
    assert len(reads) == 2 and {r.status for r in reads} == {200}
    assert not service.unknown


def test_following_a_job_that_fails_prints_its_log_and_is_no_error(
    logs_backend: AzureMLBackend, service: FakeWorkspace, job: str
) -> None:
    service.outcomes[job] = "Failed"
    service.add_log(
        job, STD_LOG, "Traceback (most recent call last):\nValueError: boom\n", at="Failed"
    )
    text = log_of(logs_backend, job, follow=True)
    assert "ValueError: boom" in text
    assert service.jobs[job]["properties"]["status"] == "Failed"


def test_following_an_ended_job_prints_its_summary(
    logs_backend: AzureMLBackend, service: FakeWorkspace, job: str
) -> None:
    """The SDK streams only while the job runs: of an ended job, its summary."""
    service.finish(job, "Completed")
    service.add_log(job, STD_LOG, "all done\n")
    text = log_of(logs_backend, job, follow=True)
    assert f"RunId: {job}" in text and "Execution Summary" in text
    assert "all done" not in text
    assert len(history(service, "GET", f"/runs/{job}/details")) == 1


# --- not follow: jobs.download -----------------------------------------------------------------


def test_the_downloaded_runner_log_is_printed(
    logs_backend: AzureMLBackend, service: FakeWorkspace, job: str
) -> None:
    service.add_log(job, STD_LOG, "what the job printed\n")
    service.add_log(job, RUNNER_LOG, "12:00:00 runner: epoch 0\n12:00:05 runner: done\n")
    service.finish(job, "Completed")

    text = log_of(logs_backend, job, follow=False)

    assert text == "12:00:00 runner: epoch 0\n12:00:05 runner: done\n"
    assert logs_backend.calls.get("download") == 1
    (rundata,) = history(service, "POST", "/rundata")
    assert rundata.body["runId"] == job and rundata.authorization == "Bearer fake-token"
    assert service.calls("POST", f"/datastores/{ARTIFACT_DATASTORE}/listSecrets$")
    # the blobs came from the account's own host name (through the proxy, into Azurite)
    account = service.storage.account_name + BLOB_SUFFIX
    assert f"{account}:443" in service.tunnels
    made = service.storage_requests
    assert {status for *_, status in made} <= {200, 206}  # a listing, then ranged reads
    assert {host for _, host, _, _ in made} == {account}
    assert any(m == "GET" and path.endswith(RUNNER_LOG) for m, _, path, _ in made)
    assert not service.unknown


def test_without_a_runner_log_the_std_logs_are_printed(
    logs_backend: AzureMLBackend, service: FakeWorkspace, job: str
) -> None:
    service.add_log(job, "user_logs/std_log_process_0.txt", "rank 0 says hi\n")
    service.add_log(job, "user_logs/std_log_process_1.txt", "rank 1 says hi\n")
    service.add_log(job, "outputs/checkpoints/last.ckpt", "not a log\n")
    service.finish(job, "Failed")

    text = log_of(logs_backend, job, follow=False)

    assert text == (
        "===== artifacts/user_logs/std_log_process_0.txt =====\nrank 0 says hi\n"
        "===== artifacts/user_logs/std_log_process_1.txt =====\nrank 1 says hi\n"
    )


def test_a_job_without_logs_says_so(
    logs_backend: AzureMLBackend, service: FakeWorkspace, job: str
) -> None:
    service.finish(job, "Completed")
    with pytest.raises(StoreError, match="the job's artifacts hold no log file"):
        log_of(logs_backend, job, follow=False)


def test_a_running_job_without_follow_says_to_follow_it(
    logs_backend: AzureMLBackend, service: FakeWorkspace, job: str
) -> None:
    service.add_log(job, STD_LOG, "still training\n")
    with pytest.raises(StoreError, match="follow it with `himl logs RUN --follow`") as raised:
        log_of(logs_backend, job, follow=False)
    assert f"https://ml.azure.com/runs/{job}" in str(raised.value)
    assert logs_backend.calls.get("download") is None  # nothing was downloaded
    assert not history(service, "POST", "/rundata") and not service.storage_requests
