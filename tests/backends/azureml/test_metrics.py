"""Metric histories of Azure ML jobs, read for real through MLflow on the workspace.

``AzureMLBackend.metric_histories`` asks the workspace for its MLflow tracking URI
(``azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/...``, what the service hands
out), then reads every run and metric history with MLflow's client through azureml-mlflow's
store, which builds ``https://<the URI's host>/mlflow/v2.0/<workspace ARM id>`` and makes its
own credential (azure-identity's ``DefaultAzureCredential``). Nothing here is patched: the
environment of :meth:`FakeWorkspace.client_environment` is what a user's machine has (an HTTPS
proxy that leads the tracking host back to the loopback workspace, the workspace's certificate,
``az`` as the credential), and the workspace answers MLflow's REST calls in MLflow's shapes:
``GET .../api/2.0/mlflow/runs/get`` and ``GET .../api/2.0/mlflow/metrics/get-history``, with a
bearer token from ``az``. The points are logged with :meth:`FakeWorkspace.log_metric`, or with
MLflow's own ``log_batch`` as the runner inside a job logs them.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from server import AZ_TOKEN, MLFLOW_HOST, WORKSPACE, WS_PATH, FakeWorkspace, MakeRuns

from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.errors import StoreError

MLFLOW = f"/mlflow/v2.0{WS_PATH}/api/2.0/mlflow/"


@pytest.fixture(autouse=True)
def online(workspace: FakeWorkspace, monkeypatch: pytest.MonkeyPatch) -> FakeWorkspace:
    """The environment a user's machine has (see the module's docstring); outside a job."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN", "MLFLOW_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in workspace.client_environment().items():
        monkeypatch.setenv(name, value)
    return workspace


def jobs_of(backend: AzureMLBackend, make_runs: MakeRuns, **fields: Any) -> list[str]:
    submitted = backend.submit(make_runs(**fields))
    return [s.record.run_id for s in submitted if s.record is not None]


def mlflow_calls(workspace: FakeWorkspace, operation: str) -> list[Any]:
    return workspace.calls("GET", "^" + MLFLOW + operation + "$")


def test_histories_are_read_through_mlflow_on_the_workspace(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    first, second = jobs_of(backend, make_runs, seeds=[0, 1])
    workspace.log_metric(first, "val_loss", [(0, 0.9), (1, 0.6), (2, 0.4)])
    workspace.log_metric(first, "epoch", [(0, 0.0), (1, 1.0), (2, 2.0)])
    workspace.log_metric(second, "val_loss", [(0, 0.8)])
    before = len(workspace.requests)

    found = backend.metric_histories([first, second, "no-such-job"])

    assert found == {
        first: {
            "epoch": [(0, 0.0), (1, 1.0), (2, 2.0)],
            "val_loss": [(0, 0.9), (1, 0.6), (2, 0.4)],
        },
        second: {"val_loss": [(0, 0.8)]},
        "no-such-job": {},
    }
    assert backend.calls.get("metrics") == 1
    # the tracking URI from the workspace, then one run read per run, one history per metric
    made = workspace.requests[before:]
    assert [r.method for r in made if r.path == WS_PATH] == ["GET"]
    runs = mlflow_calls(workspace, "runs/get")
    assert sorted(r.query["run_id"][0] for r in runs) == sorted([first, second, "no-such-job"])
    histories = mlflow_calls(workspace, "metrics/get-history")
    assert sorted((r.query["run_id"][0], r.query["metric_key"][0]) for r in histories) == sorted(
        [(first, "epoch"), (first, "val_loss"), (second, "val_loss")]
    )
    # through the tracking URI's host (the proxy's tunnel), with the token of the backend's
    # own credential: azure-ai-ml's workspaces.get registers it with azureml-mlflow for the
    # tracking URI it returns
    assert f"{MLFLOW_HOST}:443" in workspace.tunnels
    assert {r.authorization for r in [*runs, *histories]} == {"Bearer fake-token"}
    assert workspace.az_calls() == []
    assert not workspace.unknown


def test_histories_keep_mlflows_order_and_nan(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """Ordered by step, then by logging time; a NaN (MLflow's JSON writes it "NaN") stays."""
    (job,) = jobs_of(backend, make_runs)
    workspace.log_metric(job, "val_loss", [(7, 0.5), (3, 0.7), (11, math.nan)])
    workspace.log_metric(job, "val_loss", [(3, 0.65)])  # the same step, logged later
    found = backend.metric_histories([job])[job]["val_loss"]
    assert [step for step, _ in found] == [3, 3, 7, 11]
    assert [value for _, value in found][:3] == [0.7, 0.65, 0.5]
    assert math.isnan(found[3][1])


def test_what_mlflow_inside_the_job_logs_is_read_back(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """The runner in a job logs with MLflow's client on the same tracking URI (``log-batch``)."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    (job,) = jobs_of(backend, make_runs)
    uri = backend.client.workspaces.get(WORKSPACE).mlflow_tracking_uri
    # the service's mlFlowTrackingUri, which azure-ai-ml turns into MLflow 2+'s API version
    assert uri == f"azureml://{MLFLOW_HOST}/mlflow/v2.0{WS_PATH}"
    metrics = [Metric("train_loss", v, 1_700_000_000_000 + s, s) for s, v in [(0, 2.0), (1, 1.5)]]
    MlflowClient(uri).log_batch(job, metrics=metrics)
    assert workspace.calls("POST", "^" + MLFLOW + "runs/log-batch$")
    assert backend.metric_histories([job]) == {job: {"train_loss": [(0, 2.0), (1, 1.5)]}}


def test_runs_without_metrics_and_no_runs(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (job,) = jobs_of(backend, make_runs)
    assert backend.metric_histories([]) == {}
    assert not mlflow_calls(workspace, "runs/get")  # nothing asked for nothing
    assert backend.metric_histories([job]) == {job: {}}
    assert len(mlflow_calls(workspace, "runs/get")) == 1
    assert not mlflow_calls(workspace, "metrics/get-history")


def test_a_tracking_uri_alone_authenticates_with_azure_identity(
    backend: AzureMLBackend,
    workspace: FakeWorkspace,
    make_runs: MakeRuns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A tracking URI that no ``workspaces.get`` of this process handed out (one from another
    process, a config file): azureml-mlflow makes its own ``DefaultAzureCredential``, which
    here is ``az`` (AZURE_TOKEN_CREDENTIALS), never the network nor a browser."""
    from azureml.mlflow._internal.service_context_loader import _AzureMLServiceContextLoader
    from mlflow.tracking import MlflowClient

    from himl_manifest.backends.local_metrics import client_histories

    # azureml-mlflow keeps a service context per tracking URI for the process: start afresh
    monkeypatch.setattr(_AzureMLServiceContextLoader, "_tracking_uri_to_service_context", {})
    (job,) = jobs_of(backend, make_runs)
    workspace.log_metric(job, "val_loss", [(0, 0.5)])
    uri = f"azureml://{MLFLOW_HOST}/mlflow/v1.0{WS_PATH}"
    assert client_histories(MlflowClient(uri), [job]) == {job: {"val_loss": [(0, 0.5)]}}
    assert {r.authorization for r in mlflow_calls(workspace, "runs/get")} == {f"Bearer {AZ_TOKEN}"}
    assert any(call.startswith("account get-access-token") for call in workspace.az_calls())


def test_an_unreachable_workspace_is_a_clear_error(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    """The workspace's own call fails (azure-core's error, translated): MLflow is not asked."""
    (job,) = jobs_of(backend, make_runs)
    workspace.fail("GET", f"{WORKSPACE}$", 403)
    with pytest.raises(StoreError, match="reading metric histories"):
        backend.metric_histories([job])
    assert not mlflow_calls(workspace, "runs/get")


def test_a_tracking_server_refusing_is_one_clear_error(
    backend: AzureMLBackend, workspace: FakeWorkspace, make_runs: MakeRuns
) -> None:
    (job,) = jobs_of(backend, make_runs)
    workspace.fail("GET", "/api/2.0/mlflow/runs/get$", 403, times=10)
    with pytest.raises(StoreError, match="tracking server refused") as info:
        backend.metric_histories([job])
    assert "\n" not in str(info.value)


def test_without_the_plugin_or_a_tracking_uri_it_says_what_is_missing(
    backend: AzureMLBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from himl_manifest.errors import BackendUnavailable

    find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "azureml.mlflow" else find(name, *a),
    )
    with pytest.raises(BackendUnavailable, match="needs azureml-mlflow"):
        backend.metric_histories(["a-job"])
    monkeypatch.setattr(importlib.util, "find_spec", find)
    monkeypatch.setattr(backend.client.workspaces, "get", lambda name: object())
    with pytest.raises(StoreError, match="has no MLflow tracking URI"):
        backend.metric_histories(["a-job"])

    def plugin_crash(name: str) -> object:
        raise AttributeError("'NoneType' object has no attribute 'split'")

    monkeypatch.setattr(backend.client.workspaces, "get", plugin_crash)
    with pytest.raises(StoreError, match="has no MLflow tracking URI"):
        backend.metric_histories(["a-job"])
