"""Following Azure ML runs, against the loopback workspace: studio links on records, in
`himl runs` and `himl audit`; `himl apply` returning once accepted (with the links) or waiting
(``--wait``), where Ctrl-C stops the waiting and never the jobs; `himl logs` of a job.

The CLI runs in-process (``run_cli``) over a routed backend of the in-memory backend (runs on
``compute.target: local``) and the Azure ML backend over the loopback server.

The workspace here has no blob storage, so it serves no logs: ``jobs.stream`` reads the job's
run-history details (``GET /history/v1.0/.../runs/<job>/details``) and ``jobs.download`` the
run's artifact listing (``POST /history/v1.0/.../rundata``), both answered 404, and these tests
hold the error handling to a clear message, without a traceback. The logs themselves are read
for real in test_logs_service.py, against a workspace with storage.
"""

from __future__ import annotations

import io
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server import TERMINAL, FakeWorkspace, backend_of
from test_e2e import commit, init_repo, write_manifest

from himl_manifest.backends.azureml.follow import log_files
from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.backends.registry import AZUREML, LOCAL, placement
from himl_manifest.backends.routed import RoutedBackend
from himl_manifest.cli.main import cli, run_cli
from himl_manifest.errors import StoreError
from himl_manifest.model import RunStatus

STUDIO = "https://ml.azure.com/runs/"


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """`himl apply` installs SIGINT/SIGTERM handlers: put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = init_repo(tmp_path / "repo")
    write_manifest(root, "cloud")  # compute.target: a cluster -> Azure ML
    write_manifest(root, "here", compute={"target": "local"})  # -> the in-memory backend
    commit(root, "manifests")
    monkeypatch.chdir(root)
    monkeypatch.delenv("HIML_TRACEBACK", raising=False)
    return root


def routed(workspace: FakeWorkspace, repo: Path, **azure: Any) -> RoutedBackend:
    return RoutedBackend(
        {LOCAL: MemoryBackend(), AZUREML: backend_of(workspace, repo, **azure)}, route_of=placement
    )


def use(monkeypatch: pytest.MonkeyPatch, backend: Any) -> None:
    """Every command opens ``backend`` (the same one: the in-memory store lives in it)."""
    monkeypatch.setattr(
        "himl_manifest.backends.registry.open_backend", lambda *args, **kwargs: backend
    )


def himl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def cloud_job(workspace: FakeWorkspace) -> dict[str, Any]:
    (job,) = [j for j in workspace.jobs.values() if j["name"].startswith("cloud-")]
    return job


# --- the studio link on records -------------------------------------------------------------


def test_records_carry_the_studio_link(backend: AzureMLBackend, make_runs: Any) -> None:
    (run,) = make_runs()
    (submitted,) = backend.submit([run])
    assert submitted.record is not None
    url = submitted.record.url
    assert url is not None and url.startswith(STUDIO + submitted.record.run_id)
    (listed,) = backend.list_runs()
    assert listed.url == url


# --- apply ------------------------------------------------------------------------------------


def test_apply_returns_once_accepted_and_prints_the_studio_links(
    workspace: FakeWorkspace,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(monkeypatch, routed(workspace, repo))
    code, _, err = himl(capsys, "apply", "--yes")
    assert code == 0, err
    job = cloud_job(workspace)
    assert job["properties"]["status"] not in TERMINAL  # not waited for
    assert f"{STUDIO}{job['name']}" in err
    assert "go on in Azure ML" in err and "--wait" in err
    assert "Waiting for" not in err


def test_apply_wait_follows_the_azure_jobs_to_their_end(
    workspace: FakeWorkspace,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(monkeypatch, routed(workspace, repo))
    code, _, err = himl(capsys, "apply", "--yes", "--wait")
    assert code == 0, err
    job = cloud_job(workspace)
    assert job["properties"]["status"] == "Completed"
    assert "Waiting for 1 run(s) executed elsewhere" in err
    assert f"Azure ML job {job['name']} Running" in err  # live progress
    assert "Apply complete: 2 created. Runs: 2 completed." in err


def test_apply_wait_reports_a_failed_azure_job(
    workspace: FakeWorkspace,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    write_manifest(repo, "cloud", container="fake.HelloWorld", params={"behaviour": "fail"})
    commit(repo, "fails")
    use(monkeypatch, routed(workspace, repo))
    code, _, err = himl(capsys, "apply", "--yes", "--wait")
    assert code == 1
    assert "Runs: 1 completed, 1 failed." in err


def test_ctrl_c_while_waiting_stops_the_waiting_not_the_jobs(
    workspace: FakeWorkspace,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def ctrl_c(seconds: float) -> None:
        raise KeyboardInterrupt

    use(monkeypatch, routed(workspace, repo, sleep=ctrl_c))
    code, _, err = himl(capsys, "apply", "--yes", "--wait")
    assert code == 130
    assert "Stopped waiting: the 1 Azure ML job(s) go on, nothing was cancelled" in err
    assert "Traceback" not in err
    job = cloud_job(workspace)
    assert job["properties"]["status"] not in TERMINAL
    assert not workspace.calls("POST", r"/cancel$")


# --- runs and audit ---------------------------------------------------------------------------


def test_runs_and_audit_show_the_studio_link(
    workspace: FakeWorkspace,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(monkeypatch, routed(workspace, repo))
    assert himl(capsys, "apply", "--yes")[0] == 0
    job = cloud_job(workspace)
    code, out, err = himl(capsys, "runs", "--format", "json")
    assert code == 0, err
    urls = {row["run_name"]: row["url"] for row in json.loads(out)["runs"]}
    (cloud,) = [name for name in urls if name.startswith("cloud-")]
    assert urls[cloud] is not None and urls[cloud].startswith(STUDIO + job["name"])
    assert [url for name, url in urls.items() if name != cloud] == [None]  # local: no link
    code, out, _ = himl(capsys, "runs")
    assert "LINK" in out.splitlines()[0] and urls[cloud] in out
    code, out, _ = himl(capsys, "audit", cloud)
    assert code == 0
    assert any(line.startswith("studio") and urls[cloud] in line for line in out.splitlines())
    code, out, _ = himl(capsys, "audit", cloud, "--format", "json")
    assert json.loads(out)["url"] == urls[cloud]


# --- logs -------------------------------------------------------------------------------------


def test_the_log_of_a_running_job_is_followed_not_downloaded(
    backend: AzureMLBackend, make_runs: Any
) -> None:
    (run,) = make_runs()
    (submitted,) = backend.submit([run])
    assert submitted.record is not None
    with pytest.raises(StoreError, match="follow it with `himl logs RUN --follow`"):
        backend.job_log(submitted.record.run_id, follow=False, out=io.StringIO())


def test_streaming_without_run_history_is_a_clear_error(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: Any
) -> None:
    (run,) = make_runs()
    (submitted,) = backend.submit([run])
    assert submitted.record is not None
    job = submitted.record.run_id
    out = io.StringIO()
    with pytest.raises(StoreError) as raised:
        backend.job_log(job, follow=True, out=out)
    assert f"streaming the log of Azure ML job {job}" in str(raised.value)
    assert "404" in str(raised.value)
    assert f"RunId: {job}" in out.getvalue()  # the SDK's stream began, into our stream
    assert any(f"/runs/{job}/details" in call for call in workspace.unknown)


def test_downloading_without_run_history_is_a_clear_error(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: Any
) -> None:
    (run,) = make_runs()
    (submitted,) = backend.submit([run])
    assert submitted.record is not None
    job = submitted.record.run_id
    workspace.finish(job, "Completed")
    with pytest.raises(StoreError, match=f"fetching the log of Azure ML job {job}"):
        backend.job_log(job, follow=False, out=io.StringIO())
    assert backend.calls.get("download") == 1


@pytest.mark.parametrize("follow", [False, True])
def test_himl_logs_of_an_azure_run_says_what_failed_without_a_traceback(
    follow: bool,
    workspace: FakeWorkspace,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    use(monkeypatch, routed(workspace, repo))
    assert himl(capsys, "apply", "--yes", "--wait")[0] == 0
    job = cloud_job(workspace)
    args = ["logs", job["name"], *(["--follow"] if follow else [])]
    code, _, err = himl(capsys, *args)
    assert code == 1
    doing = "streaming" if follow else "fetching"
    assert f"error: {doing} the log of Azure ML job {job['name']}" in err
    assert f"The job's logs are also in the studio: {STUDIO}{job['name']}" in err
    assert "Traceback" not in err


def test_downloaded_logs_are_found_runner_log_first(tmp_path: Path) -> None:
    """Where ``jobs.download`` puts a job's default artifacts: ``artifacts/<path>``."""
    std = tmp_path / "artifacts" / "user_logs" / "std_log.txt"
    std.parent.mkdir(parents=True)
    std.write_text("stdout\n", encoding="utf-8")
    assert log_files(tmp_path) == [std]
    runner = tmp_path / "artifacts" / "outputs" / "runner.log"
    runner.parent.mkdir(parents=True)
    runner.write_text("runner\n", encoding="utf-8")
    assert log_files(tmp_path) == [runner]


def test_a_failed_job_keeps_its_studio_link(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: Any
) -> None:
    (run,) = make_runs()
    (submitted,) = backend.submit([run])
    assert submitted.record is not None
    workspace.finish(submitted.record.run_id, "Failed")
    (record,) = backend.list_runs()
    assert record.status == RunStatus.FAILED
    assert record.url is not None and record.url.startswith(STUDIO + record.run_id)
