"""The code snapshot: the files azure-ai-ml would upload, their size, symlinks, content hash.

The file selection and the hash are compared with azure-ai-ml's own functions on the same
trees (``get_ignore_file``, ``get_upload_files_from_folder``, ``get_content_hash``: what
``Code(path=...)`` uses), so "what we check" is "what would be uploaded". The staged folder
the upload takes holds exactly the snapshot's files, and the SDK's own hash of it is the
snapshot's; the tool's own store and run folders are never part of it. The upload itself runs
against the loopback workspace and Azurite (test_upload.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from himl_manifest.backends.azureml.snapshot import (
    SIZE_LIMIT,
    amlignore_line,
    code_snapshot,
    collect,
    human_size,
)
from himl_manifest.backends.azureml.upload import stage


def write(root: Path, files: dict[str, str | bytes]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


TREE: dict[str, str | bytes] = {
    "train.py": "print('hi')\n",
    "pkg/__init__.py": "",
    "pkg/model.py": "x = 1\n",
    "pkg/__pycache__/model.cpython-311.pyc": b"\x00" * 10,
    "outputs/run/last.ckpt": b"\x01" * 100,
    "outputs/keep.txt": "kept\n",
    "data/big.bin": b"\x02" * 1000,
    "Notes.md": "n\n",
    ".venv/lib/site.py": "v\n",
}


def sdk_selection(root: Path) -> tuple[list[str], str]:
    """What azure-ai-ml itself would upload for ``root``, and its content hash."""
    from azure.ai.ml._utils._asset_utils import (
        get_content_hash,
        get_ignore_file,
        get_upload_files_from_folder,
    )

    ignore = get_ignore_file(root)
    files = sorted(rel for _, rel in get_upload_files_from_folder(root, ignore_file=ignore))
    return files, str(get_content_hash(root, ignore))


@pytest.mark.parametrize(
    ("ignore_files", "expected_missing"),
    [
        ({}, set()),
        (
            {".gitignore": "__pycache__/\n/outputs/\n.venv\n# comment\n\n*.bin\n"},
            {
                "pkg/__pycache__/model.cpython-311.pyc",
                "outputs/run/last.ckpt",
                "outputs/keep.txt",
                ".venv/lib/site.py",
                "data/big.bin",
            },
        ),
        (
            # .amlignore wins over .gitignore, whole: *.bin is uploaded again
            {".gitignore": "*.bin\n", ".amlignore": "outputs/\n!outputs/keep.txt\n.venv/\n"},
            {"outputs/run/last.ckpt", ".venv/lib/site.py"},
        ),
        ({".amlignore": "*\n!*.py\n!pkg/\n"}, None),
    ],
    ids=["no-ignore-file", "gitignore", "amlignore-wins-with-negation", "allow-list"],
)
def test_same_files_and_hash_as_the_sdk(
    tmp_path: Path, ignore_files: dict[str, str], expected_missing: set[str] | None
) -> None:
    pytest.importorskip("azure.ai.ml")
    write(tmp_path, {**TREE, **ignore_files})
    snapshot = collect(tmp_path)
    ours = [f.relative for f in snapshot.files]
    sdk_files, sdk_hash = sdk_selection(tmp_path)
    assert ours == sdk_files
    assert snapshot.content_hash() == sdk_hash
    if expected_missing is not None:
        everything = set(TREE) | set(ignore_files)
        assert set(ours) == everything - expected_missing
    assert snapshot.ignore_file == (
        ".amlignore" if ".amlignore" in ignore_files else ".gitignore" if ignore_files else None
    )


def test_hash_is_deterministic_and_sees_content(tmp_path: Path) -> None:
    write(tmp_path, TREE)
    first = collect(tmp_path).content_hash()
    assert collect(tmp_path).content_hash() == first
    (tmp_path / "pkg" / "model.py").write_text("x = 2\n", encoding="utf-8")
    assert collect(tmp_path).content_hash() != first


def test_size_and_largest_files(tmp_path: Path) -> None:
    write(tmp_path, TREE)
    snapshot = collect(tmp_path)
    assert snapshot.total_size == sum(len(v) for v in TREE.values())
    assert not snapshot.over_limit
    largest = snapshot.largest(2)
    assert [f.relative for f in largest] == ["data/big.bin", "outputs/run/last.ckpt"]
    assert amlignore_line("outputs/run/last.ckpt", snapshot.files) == "outputs/"
    assert amlignore_line("data/big.bin", snapshot.files) == "/data/big.bin"
    assert amlignore_line("train.py", snapshot.files) == "/train.py"


def test_over_the_limit(tmp_path: Path) -> None:
    big = tmp_path / "weights.ckpt"
    with big.open("wb") as handle:  # sparse: no real disk used
        handle.truncate(SIZE_LIMIT + 1)
    snapshot = collect(tmp_path)
    assert snapshot.over_limit
    assert human_size(snapshot.total_size) == "300.0 MB"


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_symlinks_are_named_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "code"
    write(root, {"train.py": "x\n", "data/a.csv": "1\n"})
    outside = tmp_path / "elsewhere"
    write(outside, {"secret.txt": "s\n"})
    (root / "link.py").symlink_to("train.py")
    (root / "broken.py").symlink_to("missing.py")
    (root / "out").symlink_to(outside, target_is_directory=True)
    (root / "data-link").symlink_to("data", target_is_directory=True)
    snapshot = collect(root)
    links = {s.relative: (s.target, s.broken, s.outside, s.is_dir) for s in snapshot.symlinks}
    assert links == {
        "link.py": ("train.py", False, False, False),
        "broken.py": ("missing.py", True, False, False),
        "out": (str(outside), False, True, True),
        "data-link": ("data", False, False, True),
    }
    files = {f.relative for f in snapshot.files}
    assert files == {"train.py", "data/a.csv", "link.py"}  # directory links are not walked


def test_ignored_symlinks_are_not_reported(tmp_path: Path) -> None:
    write(tmp_path, {"train.py": "x\n", ".amlignore": "broken.py\n"})
    (tmp_path / "broken.py").symlink_to("missing.py")
    assert collect(tmp_path).symlinks == []


def test_the_tools_own_store_and_run_folders_are_never_in_a_snapshot(tmp_path: Path) -> None:
    write(tmp_path, TREE)
    write(tmp_path, {"mlflow.db": b"db", "mlflow.db-journal": b"j", ".himl/store_id": "x\n"})
    write(tmp_path, {".git/HEAD": "ref: refs/heads/main\n", "pkg/sub/.git/config": "[core]\n"})
    write(tmp_path, {"mlartifacts/1/a.ckpt": b"a", "runs/x/last.ckpt": b"r"})
    (tmp_path / "himl.yaml").write_text("outputs: runs\n", encoding="utf-8")
    files = {f.relative for f in code_snapshot(tmp_path).files}
    assert not files & {"mlflow.db", "mlflow.db-journal", ".himl/store_id", "runs/x/last.ckpt"}
    assert not any(".git/" in name for name in files)
    assert "mlartifacts/1/a.ckpt" not in files
    assert {"train.py", "himl.yaml", "outputs/keep.txt"} <= files  # outputs/ is not the root here
    assert not any("__pycache__" in name for name in files)  # TREE has one: never uploaded


def test_the_staged_folder_is_the_snapshot_and_hashes_alike(tmp_path: Path) -> None:
    pytest.importorskip("azure.ai.ml")
    project = tmp_path / "project"
    write(project, {**TREE, ".gitignore": "*.bin\n__pycache__/\n"})
    write(project, {"mlflow.db": b"db", "shared/lib.py": "y = 2\n"})
    (project / "lib.py").symlink_to("shared/lib.py")
    (project / "alias").symlink_to("shared", target_is_directory=True)
    snapshot = code_snapshot(project)
    staged = stage(snapshot, tmp_path / "staged" / "project")
    found = sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file())
    assert found == sorted({f.relative for f in snapshot.files} | {"alias/lib.py"})
    assert not any(p.is_symlink() for p in staged.rglob("*"))  # copies of the targets
    assert (staged / "train.py").stat().st_ino == (project / "train.py").stat().st_ino  # linked
    sdk_files, sdk_hash = sdk_selection(staged)
    assert "mlflow.db" not in sdk_files
    with_links = code_snapshot(staged.parent / "project")
    assert with_links.content_hash() == sdk_hash
