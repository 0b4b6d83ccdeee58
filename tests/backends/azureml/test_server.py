"""The loopback workspace itself (server.py, azurite.py), driven by the raw azure-ai-ml SDK.

Each test is one SDK operation against :class:`FakeWorkspace` and what the stand-in must do
as the service does: the code upload into Azurite (blobs are exactly the folder's files less
``.amlignore``; an unchanged folder uploads nothing; concurrent uploads both succeed), storage
faults that surface as errors in well under a second (``fast_blob_retries``), data, datastore
and compute look-ups, the job references the service checks, the run limits on job PUT and on
the run-history PATCH, and tag deletion.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from azure.ai.ml import Input, command
from azure.ai.ml.entities._assets import Code
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from server import (
    CODE_ID,
    RESOURCE_GROUP,
    SUBSCRIPTION,
    WORKSPACE,
    WS_PATH,
    FakeWorkspace,
    client_of,
)

IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
FILES = {
    "train.py": b"print('train')\n",
    "pkg/__init__.py": b"",
    "pkg/model.py": b"x = 1\n",
    "outputs/last.ckpt": b"\x00" * 64,
    "run.log": b"log\n",
    ".amlignore": b"outputs/\n*.log\n",
}
#: What azure-ai-ml uploads of FILES (the .amlignore itself included).
UPLOADED = {k: v for k, v in FILES.items() if not k.startswith("outputs/") and k != "run.log"}


@pytest.fixture
def ws(storage_workspace: FakeWorkspace) -> FakeWorkspace:
    return storage_workspace


@pytest.fixture
def client(ws: FakeWorkspace) -> Any:
    return client_of(ws)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "snapshot"
    for name, content in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def short(ws: FakeWorkspace, start: int = 0) -> list[str]:
    """The workspace requests since ``start`` as ``METHOD path?query`` (api-version left out,
    the workspace's ARM path as ``{ws}``)."""
    lines = []
    for request in ws.requests[start:]:
        query = "&".join(
            f"{k}={v[0]}" for k, v in sorted(request.query.items()) if k != "api-version"
        )
        path = request.path.replace(WS_PATH, "{ws}")
        lines.append(f"{request.method} {path}" + (f"?{query}" if query else ""))
    return lines


def job(name: str, **fields: Any) -> Any:
    """A command job on ``cpu-cluster`` with a curated environment (no environment PUT)."""
    options: dict[str, Any] = {
        "command": "python train.py",
        "environment": "azureml:AzureML-minimal@latest",
        "compute": "cpu-cluster",
        "experiment_name": "server-tests",
        "name": name,
    }
    return command(**{**options, **fields})


# --- code upload ---------------------------------------------------------------------------


def test_a_code_folder_is_uploaded_to_a_new_container_as_the_sdk_does_it(
    ws: FakeWorkspace, client: Any, folder: Path
) -> None:
    code = client._code.create_or_update(Code(path=str(folder)))
    name = code.id.split("/codes/")[1].split("/")[0]
    assert short(ws)[0].startswith(f"GET {{ws}}/codes/{name}/versions?hash=")
    assert short(ws)[0].endswith("&hashVersion=202208")
    assert short(ws)[1:] == [
        f"POST {{ws}}/codes/{name}/versions/1/startPendingUpload",
        f"PUT {{ws}}/codes/{name}/versions/1",
    ]
    assert ws.uploaded_files(code.id) == UPLOADED
    (pending,) = ws.pending_uploads
    (upload,) = ws.uploads
    assert upload.container == pending.container and upload.prefix == "snapshot"
    assert sorted(upload.blobs) == sorted(f"snapshot/{k}" for k in UPLOADED)
    # on the blob store: a HEAD of the indicator blob, a PUT per file, the confirmation metadata
    blob_calls = [(r.method, r.blob, r.comp) for r in ws.blob_requests]
    assert blob_calls[0] == ("HEAD", "snapshot/.amlignore", "")
    assert sorted(blob_calls[1:-1]) == sorted(("PUT", f"snapshot/{k}", "") for k in UPLOADED)
    assert blob_calls[-1] == ("PUT", "snapshot/.amlignore", "metadata")
    assert ws.storage.metadata(pending.container, "snapshot/.amlignore")["upload_status"] == (
        "completed"
    )
    stored = ws.code_version(code.id)["properties"]
    assert stored["codeUri"] == f"{pending.blob_uri}/snapshot"
    assert stored["isAnonymous"] is True
    assert stored["properties"]["hash_version"] == "202208"


def test_the_files_uploaded_are_the_ones_the_sdk_selects(
    ws: FakeWorkspace, client: Any, folder: Path
) -> None:
    from azure.ai.ml._utils._asset_utils import get_ignore_file, get_upload_files_from_folder

    selected = get_upload_files_from_folder(folder, ignore_file=get_ignore_file(folder))
    code = client._code.create_or_update(Code(path=str(folder)))
    assert sorted(ws.uploaded_files(code.id)) == sorted(rel for _, rel in selected)


def test_an_unchanged_folder_uploads_nothing_the_second_time(
    ws: FakeWorkspace, client: Any, folder: Path
) -> None:
    first = client._code.create_or_update(Code(path=str(folder)))
    start, blobs = len(ws.requests), len(ws.blob_requests)
    again = client._code.create_or_update(Code(path=str(folder)))  # a new uuid name
    assert again.id == first.id
    assert len(ws.uploads) == 1 and len(ws.pending_uploads) == 1
    assert ws.blob_requests[blobs:] == []
    first_name = first.id.split("/codes/")[1].split("/")[0]
    lookup, get = short(ws, start)
    assert lookup.startswith("GET {ws}/codes/") and "hash=" in lookup
    assert first_name not in lookup  # the lookup is by hash under a fresh name
    assert get == f"GET {{ws}}/codes/{first_name}/versions/1"


def test_a_changed_folder_is_uploaded_again_into_another_container(
    ws: FakeWorkspace, client: Any, folder: Path
) -> None:
    first = client._code.create_or_update(Code(path=str(folder)))
    (folder / "train.py").write_bytes(b"print('changed')\n")
    second = client._code.create_or_update(Code(path=str(folder)))
    assert second.id != first.id
    assert ws.uploads[0].container != ws.uploads[1].container
    assert ws.uploaded_files(first.id)["train.py"] == FILES["train.py"]
    assert ws.uploaded_files(second.id)["train.py"] == b"print('changed')\n"


def test_two_threads_uploading_the_same_folder_both_succeed(
    ws: FakeWorkspace, folder: Path
) -> None:
    clients = [client_of(ws), client_of(ws)]
    results: list[Any] = [None, None]
    barrier = threading.Barrier(2)

    def upload(i: int) -> None:
        barrier.wait()
        try:
            results[i] = clients[i]._code.create_or_update(Code(path=str(folder)))
        except Exception as exc:  # reported below
            results[i] = exc

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(not isinstance(r, Exception) and r is not None for r in results), results
    for result in results:
        assert ws.uploaded_files(result.id) == UPLOADED
    containers = [p.container for p in ws.pending_uploads]
    assert len(set(containers)) == len(containers)  # never a shared container


def test_a_job_with_a_code_folder_uploads_it_and_names_it(
    ws: FakeWorkspace, client: Any, folder: Path
) -> None:
    submitted = client.jobs.create_or_update(
        job("with-code", code=str(folder), environment_variables={"HIML": "1"})
    )
    stored = ws.jobs[submitted.name]["properties"]
    (upload,) = ws.uploads
    assert stored["codeId"] == upload.code_id
    assert ws.uploaded_files(stored["codeId"]) == UPLOADED
    listed = [j for j in client.jobs.list() if j.name == submitted.name]
    assert listed[0].environment_variables == {"HIML": "1"}  # the list has the full body
    assert not ws.unknown


def test_a_code_uri_whose_blobs_were_never_uploaded_is_refused(
    ws: FakeWorkspace, client: Any
) -> None:
    container = ws.storage.create_container("never-uploaded")
    path = f"{ws.blob_proxy.url}/{container}/snapshot"
    with pytest.raises(HttpResponseError) as refused:
        client._code.create_or_update(Code(name="manual", version="1", path=path))
    assert refused.value.status_code == 400
    assert "no blobs were uploaded" in str(refused.value)
    assert "manual:1" not in ws.code_versions


def test_a_code_version_keeps_its_path(ws: FakeWorkspace, client: Any, folder: Path) -> None:
    code = client._code.create_or_update(Code(path=str(folder)))
    name = code.id.split("/codes/")[1].split("/")[0]
    other = ws.storage.create_container("other-place")
    ws.storage.service().get_blob_client(other, "x/a.py").upload_blob(b"1")
    with pytest.raises(HttpResponseError, match="Asset paths cannot be updated") as refused:
        client._code.create_or_update(
            Code(name=name, version="1", path=f"{ws.blob_proxy.url}/{other}/x")
        )
    assert refused.value.status_code == 400


# --- storage faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code"),
    [("wrong-key", "AuthorizationFailure"), ("read-only", "AuthorizationPermissionMismatch")],
)
def test_a_sas_that_storage_refuses_is_a_403(
    ws: FakeWorkspace, client: Any, folder: Path, fault: str, code: str
) -> None:
    ws.fail_storage(fault)
    started = time.monotonic()
    with pytest.raises(HttpResponseError) as refused:
        client._code.create_or_update(Code(path=str(folder)))
    assert refused.value.status_code == 403
    assert code in str(refused.value)
    assert time.monotonic() - started < 5  # 403 is not retried
    assert ws.uploads == [] and ws.pending_uploads[0].fault == fault
    assert len(ws.code_versions) == 1  # the default one: nothing registered


def test_unreachable_storage_is_an_error_at_once(
    ws: FakeWorkspace, client: Any, folder: Path, fast_blob_retries: None
) -> None:
    ws.fail_storage("unreachable")
    started = time.monotonic()
    with pytest.raises(ServiceRequestError, match="Connection refused"):
        client._code.create_or_update(Code(path=str(folder)))
    assert time.monotonic() - started < 5
    assert ws.uploads == [] and ws.blob_requests == []


def test_unreachable_storage_fails_the_job_before_it_is_sent(
    ws: FakeWorkspace, client: Any, folder: Path, fast_blob_retries: None
) -> None:
    from azure.ai.ml.exceptions import AssetException

    ws.fail_storage("unreachable")
    with pytest.raises(AssetException):
        client.jobs.create_or_update(job("no-storage", code=str(folder)))
    assert ws.jobs == {}


@pytest.mark.parametrize(("status", "drop"), [(503, False), (500, False), (0, True)])
def test_a_failing_blob_store_surfaces_after_its_retries(
    ws: FakeWorkspace,
    client: Any,
    folder: Path,
    fast_blob_retries: None,
    status: int,
    drop: bool,
) -> None:
    fault = ws.fail_blob("PUT", r"/snapshot/train\.py$", status or 503, times=None, drop=drop)
    with pytest.raises(Exception) as failed:
        client._code.create_or_update(Code(path=str(folder)))
    if drop:
        assert "Connection aborted" in str(failed.value)
    else:
        assert isinstance(failed.value, HttpResponseError)
        assert failed.value.status_code == status
    assert fault.hits == 2  # the first try and FastRetry's one retry
    assert ws.uploads == []


def test_one_5xx_is_retried_and_the_upload_succeeds(
    ws: FakeWorkspace, client: Any, folder: Path, fast_blob_retries: None
) -> None:
    fault = ws.fail_blob("PUT", r"/snapshot/train\.py$", 503, times=1)
    code = client._code.create_or_update(Code(path=str(folder)))
    assert fault.hits == 1
    assert ws.uploaded_files(code.id) == UPLOADED


def test_a_workspace_without_storage_refuses_the_upload(
    workspace: FakeWorkspace, folder: Path
) -> None:
    with pytest.raises(HttpResponseError, match="no blob storage"):
        client_of(workspace)._code.create_or_update(Code(path=str(folder)))


# --- data, datastores, computes ------------------------------------------------------------


def test_data_by_version_and_latest(ws: FakeWorkspace, client: Any) -> None:
    ws.add_data("mnist", ["1", "2"])
    one = client.data.get("mnist", version="1")
    assert one.version == "1" and one.type == "uri_folder"
    assert one.path.endswith("/datastores/workspaceblobstore/paths/data/mnist/1/")
    start = len(ws.requests)
    assert client.data.get("mnist", label="latest").version == "2"
    assert short(ws, start) == ["GET {ws}/data/mnist", "GET {ws}/data/mnist/versions/2"]
    assert [d.version for d in client.data.list(name="mnist")] == ["1", "2"]


def test_unknown_data_is_the_services_404(ws: FakeWorkspace, client: Any) -> None:
    from azure.ai.ml.exceptions import MlException

    ws.add_data("mnist", ["1"])
    with pytest.raises(ResourceNotFoundError) as missing:
        client.data.get("mnist", version="9")
    assert missing.value.status_code == 404 and missing.value.error.code == "UserError"
    with pytest.raises(MlException, match="does not exist"):  # the container GET 404s
        client.data.get("nothing", label="latest")


def test_the_data_version_list_is_ordered_and_topped(ws: FakeWorkspace, client: Any) -> None:
    ws.add_data("mnist", ["1", "2", "3"])
    versions = client.data._operation.list(
        name="mnist",
        resource_group_name=RESOURCE_GROUP,
        workspace_name=WORKSPACE,
        order_by="createdtime desc",
        top=1,
    )
    assert [v.name for v in versions] == ["3"]
    assert "$orderBy=createdtime desc&$top=1" in short(ws)[-1]


def test_environment_latest_is_the_newest_version_listed(ws: FakeWorkspace, client: Any) -> None:
    ws.add_environment("trainer", "1", image=IMAGE)
    ws.add_environment("trainer", "2", image=IMAGE)
    start = len(ws.requests)
    assert client.environments.get("trainer", label="latest").version == "2"
    assert short(ws, start)[0] == (
        "GET {ws}/environments/trainer/versions?$orderBy=createdtime desc&$top=1"
    )
    submitted = client.jobs.create_or_update(job("env-latest", environment="trainer@latest"))
    assert ws.jobs[submitted.name]["properties"]["environmentId"] == (
        f"{WS_PATH}/environments/trainer/versions/2"
    )


def test_job_inputs_name_data_and_datastores_that_exist(ws: FakeWorkspace, client: Any) -> None:
    ws.add_data("mnist", ["1", "2"])
    inputs = {
        "latest": Input(type="uri_folder", path="mnist@latest"),
        "pinned": Input(type="uri_folder", path="azureml:mnist:1"),
        "raw": Input(type="uri_folder", path="azureml://datastores/workspaceblobstore/paths/x/"),
    }
    submitted = client.jobs.create_or_update(job("inputs", inputs=inputs))
    sent = ws.jobs[submitted.name]["properties"]["inputs"]
    assert sent["latest"]["uri"] == f"{WS_PATH}/data/mnist/versions/2"
    assert sent["pinned"]["uri"] == f"{WS_PATH}/data/mnist/versions/1"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("azureml:mnist:7", "could not find asset"),
        ("azureml://datastores/nowhere/paths/x/", "datastore nowhere not found"),
    ],
)
def test_a_job_naming_missing_data_is_refused(
    ws: FakeWorkspace, client: Any, path: str, message: str
) -> None:
    ws.add_data("mnist", ["1"])
    with pytest.raises(HttpResponseError, match=message) as refused:
        client.jobs.create_or_update(job("bad-input", inputs={"d": Input(path=path)}))
    assert refused.value.status_code == 400 and ws.jobs == {}


def test_the_sdk_looks_up_a_prefixed_label_under_the_prefixed_name(
    ws: FakeWorkspace, client: Any
) -> None:
    """azure-ai-ml 1.35 keeps ``azureml:`` in the name it resolves ``azureml:x@latest`` under
    (the YAML loader strips it, ``Input(path=...)`` does not): the lookup 404s."""
    from azure.ai.ml.exceptions import MlException

    ws.add_data("mnist", ["1"])
    with pytest.raises(MlException, match="does not exist"):
        client.jobs.create_or_update(
            job("prefixed", inputs={"d": Input(type="uri_folder", path="azureml:mnist@latest")})
        )
    assert "GET {ws}/data/azureml%3Amnist" in short(ws)


def test_datastores(ws: FakeWorkspace, client: Any) -> None:
    blob = client.datastores.get("workspaceblobstore")
    assert "blob" in str(blob.type).lower() and blob.account_name == ws.storage.account_name
    assert client.datastores.get_default().name == "workspaceblobstore"
    ws.add_datastore("landing", container="raw")
    assert client.datastores.get("landing").container_name == "raw"
    assert sorted(d.name for d in client.datastores.list()) == ["landing", "workspaceblobstore"]
    with pytest.raises(ResourceNotFoundError):
        client.datastores.get("nowhere")


def test_computes_and_vm_sizes(ws: FakeWorkspace, client: Any) -> None:
    gpu = client.compute.get("gpu-cluster")
    assert (gpu.type, gpu.size, gpu.min_instances, gpu.max_instances) == (
        "amlcompute",
        "Standard_NC6s_v3",
        0,
        4,
    )
    ws.add_compute("a100", vm_size="Standard_NC24ads_A100_v4", max_nodes=2)
    assert client.compute.get("a100").max_instances == 2
    assert sorted(c.name for c in client.compute.list()) == ["a100", "cpu-cluster", "gpu-cluster"]
    sizes = {s.name: s for s in client.compute.list_sizes(location="westeurope")}
    assert {
        "Standard_DS3_v2": 0,
        "Standard_NC6s_v3": 1,
        "Standard_NC12s_v3": 2,
        "Standard_NC24ads_A100_v4": 1,
        "Standard_ND96asr_v4": 8,
    }.items() <= {name: s.gpus for name, s in sizes.items()}.items()
    # azure-ai-ml 1.35 copies the REST names onto VmSize: v_cp_us and memory_gb stay None
    big, v3 = sizes["Standard_ND96asr_v4"], sizes["Standard_NC6s_v3"]
    assert (big.v_cp_us, big.vCPUs, v3.memory_gb, v3.memoryGB) == (None, 96, None, 112.0)
    start = len(ws.requests)
    assert len(list(client.compute.list_sizes())) == len(sizes)  # the workspace's location
    assert short(ws, start) == [
        "GET {ws}",
        f"GET /subscriptions/{SUBSCRIPTION}/providers/Microsoft.MachineLearningServices"
        "/locations/westeurope/vmSizes",
    ]
    with pytest.raises(ResourceNotFoundError):
        client.compute.get("nowhere")


def test_a_job_on_a_missing_compute_is_refused(ws: FakeWorkspace, client: Any) -> None:
    ws.remove_compute("cpu-cluster")
    with pytest.raises(HttpResponseError, match="Compute cpu-cluster not found") as refused:
        client.jobs.create_or_update(job("no-compute"))
    assert refused.value.status_code == 400 and ws.jobs == {}


def test_a_job_must_name_a_registered_environment_and_code(ws: FakeWorkspace, client: Any) -> None:
    with pytest.raises(HttpResponseError, match="Could not find asset") as refused:
        client.jobs.create_or_update(job("no-env", environment="azureml:trainer:3"))
    assert refused.value.status_code == 400
    ws.add_environment("trainer", "3", image=IMAGE)
    missing = CODE_ID.replace("himl-snapshot", "never-made")
    with pytest.raises(HttpResponseError, match="Could not find asset") as refused:
        client.jobs.create_or_update(job("no-code", environment="azureml:trainer:3", code=missing))
    assert refused.value.status_code == 400
    done = client.jobs.create_or_update(job("ok", environment="azureml:trainer:3", code=CODE_ID))
    assert ws.jobs[done.name]["properties"]["codeId"] == CODE_ID


# --- run limits -------------------------------------------------------------------------------

LONG = "k" * 101
LIMIT_CASES = {
    "51 tags": ({"tags": {f"t{i}": "v" for i in range(51)}}, "limit is 50 tags"),
    "tag key": ({"tags": {LONG: "v"}}, "limit for a tag key is 100"),
    "tag value": ({"tags": {"t": "v" * 1001}}, "limit for a tag value is 1000"),
    "51 properties": (
        {"properties": {f"p{i}": "v" for i in range(51)}},
        "limit is 50 properties",
    ),
    "property key": ({"properties": {LONG: "v"}}, "limit for a property key is 100"),
    "property value": ({"properties": {"p": "v" * 1001}}, "limit for a property value is 1000"),
    "display name": ({"display_name": "d" * 257}, "limit is 256"),
    "description": ({"description": "d" * 5001}, "limit is 5000"),
    "experiment name": ({"experiment_name": "e" * 257}, "limit is 256"),
    "job name": ({"name": "n" * 257}, "limit is 256"),
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
def test_each_run_limit_is_refused_at_submission(ws: FakeWorkspace, client: Any, case: str) -> None:
    fields, message = LIMIT_CASES[case]
    with pytest.raises(HttpResponseError, match=message) as refused:
        client.jobs.create_or_update(job(**{"name": "limits", **fields}))
    assert refused.value.status_code == 400
    assert refused.value.error.code == "UserError"
    assert ws.jobs == {}


def test_the_limits_themselves_are_accepted(ws: FakeWorkspace, client: Any) -> None:
    sdk_properties = 4  # mlflow.source.git.* and azureml.git.dirty, at most
    fields = {
        "tags": {f"{i:02d}" + "k" * 98: "v" * 1000 for i in range(50)},
        "properties": {f"p{i}": "v" * 1000 for i in range(50 - sdk_properties)},
        "display_name": "d" * 256,
        "description": "d" * 5000,
        "experiment_name": "e" * 256,
    }
    submitted = client.jobs.create_or_update(job("n" * 256, **fields))
    assert len(ws.jobs[submitted.name]["properties"]["tags"]) == 50


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"tags": {f"more{i}": "v" for i in range(41)}}, "limit is 50 tags"),
        ({"properties": {"p": "v" * 1001}}, "limit for a property value is 1000"),
        ({"display_name": "d" * 257}, "limit is 256"),
        ({"description": "d" * 5001}, "limit is 5000"),
    ],
)
def test_the_run_history_patch_counts_the_merged_result(
    ws: FakeWorkspace, client: Any, update: dict[str, Any], message: str
) -> None:
    submitted = client.jobs.create_or_update(job("patched", tags={f"t{i}": "v" for i in range(10)}))
    with pytest.raises(HttpResponseError, match=message) as refused:
        client.jobs.update(submitted.name, **update)
    assert refused.value.status_code == 400
    assert len(ws.jobs[submitted.name]["properties"]["tags"]) == 10


def delete_tags(client: Any, experiment: str, run: str, keys: Any) -> Any:
    """``DELETE .../runs/{run}/tags`` with a JSON list of keys, through the SDK's own
    run-history pipeline (its 1.35 ``delete_tags_by_experiment_name`` sends no body)."""
    from azure.core.rest import HttpRequest

    runs = client.jobs._runs_operations._operation
    path = f"/history/v1.0{WS_PATH}/experiments/{experiment}/runs/{run}/tags"
    url = runs._client.format_url(path, endpoint=runs._config.endpoint)
    request = HttpRequest("DELETE", url, params={"api-version": "v1.0"}, json=keys)
    return runs._client.send_request(request)


def test_tags_are_deleted_by_key(ws: FakeWorkspace, client: Any) -> None:
    submitted = client.jobs.create_or_update(job("tagged", tags={"a": "1", "b": "2", "c": "3"}))
    client.jobs.get(submitted.name)  # the discovery of the run-history endpoint
    response = delete_tags(client, "server-tests", submitted.name, ["a", "c", "never-set"])
    assert response.status_code == 200
    assert response.json()["tags"] == {"b": "2"}
    assert ws.jobs[submitted.name]["properties"]["tags"] == {"b": "2"}
    (call,) = ws.calls("DELETE", "/tags$")
    assert call.path.endswith(f"/experiments/server-tests/runs/{submitted.name}/tags")
    assert call.body == ["a", "c", "never-set"]
    assert client.jobs.get(submitted.name).tags == {"b": "2"}


def test_the_sdks_own_tag_deletion_sends_no_keys_and_is_refused(
    ws: FakeWorkspace, client: Any
) -> None:
    submitted = client.jobs.create_or_update(job("tagged", tags={"a": "1"}))
    with pytest.raises(HttpResponseError) as refused:
        client.jobs._runs_operations._operation.delete_tags_by_experiment_name(
            subscription_id=SUBSCRIPTION,
            resource_group_name=RESOURCE_GROUP,
            workspace_name=WORKSPACE,
            experiment_name="server-tests",
            run_id=submitted.name,
        )
    assert refused.value.status_code == 400
    (call,) = ws.calls("DELETE", "/tags$")
    assert call.body is None and call.query["api-version"] == ["v1.0"]
    assert ws.jobs[submitted.name]["properties"]["tags"] == {"a": "1"}


# --- Azurite itself -------------------------------------------------------------------------


def test_azurite_serves_the_dev_account(azurite: Any) -> None:
    from azure.storage.blob import ContainerClient

    from azurite import WRONG_KEY

    container = azurite.create_container("azurite-self-test")
    assert container in azurite.containers()
    ContainerClient.from_container_url(azurite.container_sas_url(container)).upload_blob(
        "a/b.txt", b"hi"
    )
    assert azurite.blobs(container) == {"a/b.txt": b"hi"}
    for sas in (
        azurite.container_sas_url(container, "r"),
        azurite.container_sas_url(container, account_key=WRONG_KEY),
    ):
        with pytest.raises(HttpResponseError) as refused:
            ContainerClient.from_container_url(sas, retry_total=0).upload_blob("c", b"x")
        assert refused.value.status_code == 403
    assert azurite.url == f"http://127.0.0.1:{azurite.port}/devstoreaccount1"


def test_a_missing_azurite_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    import azurite as module

    monkeypatch.setattr(module, "BINARY", module.PACKAGE_DIR / "node_modules/.bin/missing")
    with pytest.raises(module.AzuriteNotInstalled, match=r"make setup.*npm ci --prefix"):
        module.Azurite().start()


def test_azurite_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """Even a SIGKILL of the test process leaves no Azurite behind (the stdin watchdog)."""
    orphan_probe = tmp_path / "pid"
    here = Path(__file__).resolve().parent
    script = (
        f"import sys; sys.path.insert(0, {str(here)!r})\n"
        "from azurite import Azurite\n"
        "a = Azurite().start()\n"
        f"open({str(orphan_probe)!r}, 'w').write(str(a.process.pid))\n"
        "import time; time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        while not orphan_probe.exists() or not orphan_probe.read_text():
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        child = int(orphan_probe.read_text())
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(5)
        deadline = time.monotonic() + 5
        while _alive(child):
            assert time.monotonic() < deadline, "Azurite outlived the process that started it"
            time.sleep(0.05)
    finally:
        if parent.poll() is None:
            parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(") ")[-1].startswith("Z"))
