"""A lost, replaced or read-only run store is an error, never a silent new start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from backend_helpers import MakeRuns, fake_command, run_all

from himl_manifest.backends.local import LocalBackend
from himl_manifest.errors import StoreError
from himl_manifest.model import RunStatus


def test_a_store_deleted_during_an_apply_is_an_error(
    backend: LocalBackend, make_runs: MakeRuns, project: Path
) -> None:
    runs = make_runs(seeds=[0, 1])
    backend.submit(runs)
    (project / "mlflow.db").unlink()
    with pytest.raises(StoreError, match="vanished while this command was using it"):
        backend.wait([run.run_name for run in runs])


def test_a_store_replaced_during_an_apply_is_an_error(
    backend: LocalBackend, make_runs: MakeRuns, project: Path, empty_store: Path
) -> None:
    runs = make_runs(params={"behaviour": "ok"})
    backend.submit(runs)
    replacement = project / "other.db"
    shutil.copy(empty_store, replacement)
    os.replace(replacement, project / "mlflow.db")
    with pytest.raises(StoreError, match="was replaced by another file"):
        backend.wait([run.run_name for run in runs])


def _reopen(project: Path) -> LocalBackend:
    return LocalBackend(f"sqlite:///{project / 'mlflow.db'}", project, job_command=fake_command)


def test_an_empty_store_beside_earlier_runs_needs_confirmation(
    backend: LocalBackend, make_runs: MakeRuns, project: Path, empty_store: Path
) -> None:
    runs = make_runs()
    assert backend.check_continuity(confirmed=False) == []  # a new project: nothing to ask
    (record,) = run_all(backend, runs)
    assert record.status == RunStatus.COMPLETED
    assert _reopen(project).check_continuity(confirmed=False) == []

    (project / "mlflow.db").write_bytes(b"")  # a 0-byte store: taken as new by MLflow...
    store_uri = f"sqlite:///{project / 'mlflow.db'}"
    check = (
        "from pathlib import Path\nfrom himl_manifest.backends.local import LocalBackend\n"
        f"LocalBackend({store_uri!r}, Path({str(project)!r})).check_continuity(confirmed=False)"
    )
    done = subprocess.run(  # ...in a fresh process (this one's MLflow caches the old schema)
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0 and "is not the store this project's" in done.stderr
    shutil.copy(empty_store, project / "mlflow.db")
    fresh = _reopen(project)
    with pytest.raises(StoreError) as refused:
        fresh.check_continuity(confirmed=False)
    message = str(refused.value)
    assert "not the store this project's applies wrote to" in message
    assert "holds no runs, but" in message and "1 run folder(s)" in message
    assert "--yes" in message
    assert fresh.list_runs() == []  # nothing was created
    assert len(fresh.check_continuity(confirmed=True)) == 2
    (again,) = run_all(fresh, runs)  # confirmed: this store is the project's store now
    assert again.status == RunStatus.COMPLETED
    assert _reopen(project).check_continuity(confirmed=False) == []


def test_a_lost_state_folder_alone_still_catches_an_empty_store(
    backend: LocalBackend, make_runs: MakeRuns, project: Path, empty_store: Path
) -> None:
    run_all(backend, make_runs())
    shutil.rmtree(project / ".himl")
    shutil.copy(empty_store, project / "mlflow.db")
    with pytest.raises(StoreError, match="holds no runs, but"):
        _reopen(project).check_continuity(confirmed=False)


NOBODY = 65534
PROBE = """
import sys
from pathlib import Path
from himl_manifest.backends.local import LocalBackend
from himl_manifest.errors import StoreError

root = Path(sys.argv[1])
backend = LocalBackend(f"sqlite:///{root / 'mlflow.db'}", root)
print(len(backend.list_runs()))
try:
    backend.set_state("anything", "archived")
except StoreError as exc:
    print(f"error: {exc}")
"""


@pytest.fixture
def shared_folder(empty_store: Path) -> Iterator[Path]:
    """A folder another user can read but not write (pytest's own tmp is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="himl-ro-"))
    try:
        os.chmod(folder, 0o755)
        (folder / ".git").mkdir()
        shutil.copy(empty_store, folder / "mlflow.db")
        os.chmod(folder / "mlflow.db", 0o644)
        yield folder
    finally:
        shutil.rmtree(folder)


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_a_read_only_store_is_named_and_nothing_is_changed(shared_folder: Path) -> None:
    """The store is root's; the command runs as nobody (root itself may write anything)."""
    before = (shared_folder / "mlflow.db").read_bytes()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(shared_folder),
        "PYTHONPATH": os.pathsep.join(sys.path),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    as_nobody = ("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups")
    reachable = subprocess.run(
        [*as_nobody, sys.executable, "-c", "import himl_manifest, mlflow"],
        cwd=shared_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if reachable.returncode != 0:  # e.g. the checkout lives in a folder only root may enter
        pytest.skip(f"nobody cannot import the package here: {reachable.stderr.strip()[-200:]}")
    done = subprocess.run(
        [*as_nobody, sys.executable, "-c", PROBE, str(shared_folder)],
        cwd=shared_folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "0"  # reading works
    assert lines[1] == (
        f"error: the run store {shared_folder / 'mlflow.db'} is read-only (the file or its "
        f"folder {shared_folder}): nothing was changed"
    )
    assert "Traceback" not in done.stderr and "sqlalchemy" not in done.stderr.lower()
    assert (shared_folder / "mlflow.db").read_bytes() == before
