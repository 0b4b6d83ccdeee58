"""The code upload, for real: the backend's submissions upload the code snapshot through
azure-ai-ml's own code-asset flow, into Azurite behind the loopback workspace.

What these tests prove: the blobs uploaded are exactly the snapshot's files (the ignore file
honoured, the tool's own store and run folders left out), an unchanged tree uploads nothing,
concurrent applies and a "blob already exists" race do not fail, a job names the code version
made, and every storage fault is one clear message naming what failed.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from server import FakeWorkspace, MakeRuns, backend_of

from himl_manifest.backends.azureml.snapshot import code_snapshot
from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.backends.azureml.workspace import Timeouts
from himl_manifest.backends.base import SubmissionStopped
from himl_manifest.errors import StoreError

FAST = Timeouts(connect_s=2.0, deadline_s=10.0, retries=1)

FILES: dict[str, bytes] = {
    "train.py": b"print('train')\n",
    "pkg/__init__.py": b"",
    "pkg/model.py": b"x = 1\n",
    "data/big.bin": b"\x00" * 2048,
    "notes/README.md": b"# notes\n",
}


def uploading(workspace: FakeWorkspace, project: Path) -> AzureMLBackend:
    """A backend whose code is uploaded for real (no stand-in code id)."""
    return backend_of(workspace, project, code=None, timeouts=FAST)  # type: ignore[no-any-return]


def write_tree(project: Path, files: dict[str, bytes] = FILES) -> None:
    for name, content in files.items():
        path = project / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def code_of(workspace: FakeWorkspace, run_name: str) -> str:
    return str(workspace.jobs[run_name]["properties"]["codeId"])


@pytest.fixture
def tree(project: Path) -> Path:
    write_tree(project)
    (project / ".gitignore").write_text("*.bin\n", encoding="utf-8")
    # what the tool keeps in the project: never uploaded
    (project / "mlflow.db").write_bytes(b"sqlite")
    (project / ".himl").mkdir()
    (project / ".himl" / "store_id").write_text("x\n")
    (project / "outputs" / "run").mkdir(parents=True)
    (project / "outputs" / "run" / "last.ckpt").write_bytes(b"\x01" * 64)
    return project


def test_the_uploaded_blobs_are_exactly_the_snapshot(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    (done,) = uploading(storage_workspace, tree).submit([run])
    uploaded = storage_workspace.uploaded_files(code_of(storage_workspace, run.run_name))
    snapshot = code_snapshot(tree)
    assert uploaded == {f.relative: (tree / f.relative).read_bytes() for f in snapshot.files}
    assert "data/big.bin" not in uploaded and ".gitignore" in uploaded  # .gitignore honoured
    assert not {"mlflow.db", ".himl/store_id", "outputs/run/last.ckpt"} & set(uploaded)
    assert done.record is not None and done.record.run_id == run.run_name


def test_an_amlignore_wins_over_the_gitignore(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    (tree / ".amlignore").write_text("notes/\n", encoding="utf-8")
    (run,) = make_runs()
    uploading(storage_workspace, tree).submit([run])
    uploaded = storage_workspace.uploaded_files(code_of(storage_workspace, run.run_name))
    assert "data/big.bin" in uploaded and "notes/README.md" not in uploaded


def test_unchanged_code_uploads_nothing_the_second_time(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    first, second = make_runs("first"), make_runs("second")
    uploading(storage_workspace, tree).submit(first)
    assert len(storage_workspace.uploads) == 1
    uploading(storage_workspace, tree).submit(second)  # a second apply, same code
    assert len(storage_workspace.uploads) == 1 and len(storage_workspace.pending_uploads) == 1
    assert code_of(storage_workspace, first[0].run_name) == code_of(
        storage_workspace, second[0].run_name
    )
    (tree / "train.py").write_bytes(b"print('changed')\n")
    third = make_runs("third")
    uploading(storage_workspace, tree).submit(third)
    assert len(storage_workspace.uploads) == 2  # changed code: uploaded again
    assert code_of(storage_workspace, third[0].run_name) != code_of(
        storage_workspace, first[0].run_name
    )


def test_one_upload_per_code_root_and_apply(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    (tree / "sub").mkdir()
    (tree / "sub" / "main.py").write_bytes(b"print('sub')\n")
    at_root = make_runs("root", seeds=[0, 1, 2])
    in_sub = make_runs("sub", code_root="sub")
    uploading(storage_workspace, tree).submit([*at_root, *in_sub])
    assert len(storage_workspace.uploads) == 2  # one per code root, not one per job
    assert storage_workspace.uploaded_files(code_of(storage_workspace, in_sub[0].run_name)) == {
        "main.py": b"print('sub')\n"
    }
    environments = storage_workspace.calls("PUT", "/environments/")
    assert len(environments) == 1  # the anonymous environment, registered once


def test_two_concurrent_applies_both_succeed(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    runs = {name: make_runs(name) for name in ("left", "right")}
    errors: list[BaseException] = []

    def apply(name: str) -> None:
        try:
            uploading(storage_workspace, tree).submit(runs[name])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=apply, args=(name,)) for name in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(storage_workspace.created) == sorted(r[0].run_name for r in runs.values())


def test_a_blob_already_exists_race_is_retried(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    storage_workspace.fail_blob("PUT", r"/.+/.+", 409, code="BlobAlreadyExists", times=1)
    (run,) = make_runs()
    (done,) = uploading(storage_workspace, tree).submit([run])
    assert done.record is not None
    assert storage_workspace.uploaded_files(code_of(storage_workspace, run.run_name))


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("wrong-key", r"blob storage refused the upload \(403 "),
        ("read-only", r"blob storage refused the upload \(403 "),
        ("unreachable", "could not reach the workspace's blob storage"),
    ],
)
def test_a_storage_fault_is_one_clear_message(
    storage_workspace: FakeWorkspace,
    tree: Path,
    make_runs: MakeRuns,
    fault: str,
    message: str,
    fast_blob_retries: None,
) -> None:
    storage_workspace.fail_storage(fault, times=2)
    (run,) = make_runs()
    with pytest.raises(StoreError, match=message) as info:
        uploading(storage_workspace, tree).submit([run])
    text = str(info.value)
    assert text.startswith("uploading the code of the project root to the Azure ML workspace")
    assert "internal error" not in text and "Traceback" not in text
    assert not isinstance(info.value, SubmissionStopped)  # nothing was sent
    assert storage_workspace.created == []


def test_a_failing_blob_store_is_one_clear_message(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns, fast_blob_retries: None
) -> None:
    storage_workspace.fail_blob("PUT", r"/.+/.+", 503, times=None)
    (run,) = make_runs()
    with pytest.raises(StoreError, match="blob storage answered 503"):
        uploading(storage_workspace, tree).submit([run])
    assert storage_workspace.created == []


def test_an_empty_code_root_is_refused(
    storage_workspace: FakeWorkspace, project: Path, make_runs: MakeRuns
) -> None:
    (project / "empty").mkdir()
    (run,) = make_runs(code_root="empty")
    with pytest.raises(StoreError, match="the code snapshot has no files"):
        uploading(storage_workspace, project).submit([run])


def test_the_service_refusing_the_code_version_is_translated(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    storage_workspace.fail("PUT", r"/codes/[^/]+/versions/[^/]+$", 403, times=2)
    (run,) = make_runs()
    with pytest.raises(StoreError, match="access denied") as info:
        uploading(storage_workspace, tree).submit([run])
    assert "uploading the code" in str(info.value)


def test_a_job_submitted_names_the_code_version(
    storage_workspace: FakeWorkspace, tree: Path, make_runs: MakeRuns
) -> None:
    (run,) = make_runs()
    uploading(storage_workspace, tree).submit([run])
    code_id = code_of(storage_workspace, run.run_name)
    version: dict[str, Any] = storage_workspace.code_version(code_id)
    assert version["properties"]["isAnonymous"] is True
    assert version["properties"]["properties"]["hash_sha256"] == code_snapshot(tree).content_hash()


def test_staging_copies_where_it_cannot_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another file system (the temporary folder on its own disk): the files are copied."""
    from himl_manifest.backends.azureml.upload import stage

    write_tree(tmp_path / "code")

    def cross_device(source: object, target: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("himl_manifest.backends.azureml.upload.os.link", cross_device)
    staged = stage(code_snapshot(tmp_path / "code"), tmp_path / "staged")
    assert (staged / "pkg" / "model.py").read_bytes() == FILES["pkg/model.py"]
    assert (staged / "train.py").stat().st_ino != (tmp_path / "code" / "train.py").stat().st_ino


def test_a_code_version_without_an_id_is_an_error(tree: Path) -> None:
    from himl_manifest.backends.azureml.upload import CodeAssets

    class Codes:
        def create_or_update(self, code: object) -> object:
            return type("Registered", (), {"id": ""})()

    client = type("Client", (), {"_code": Codes(), "_base_url": "https://management.azure.com"})()
    with pytest.raises(StoreError, match="registered the code without an id"):
        CodeAssets(client, tree).code_id()


def test_an_upload_failure_that_is_neither_the_services_nor_an_answer(tree: Path) -> None:
    """A storage failure with no HTTP answer and no connection error still says what it was."""
    from himl_manifest.backends.azureml.upload import CodeAssets

    class Codes:
        def create_or_update(self, code: object) -> object:
            raise OSError("disk full while reading the staged files")

    client = type("Client", (), {"_code": Codes(), "_base_url": "https://management.azure.com"})()
    with pytest.raises(StoreError, match="OSError: disk full"):
        CodeAssets(client, tree).code_id()
