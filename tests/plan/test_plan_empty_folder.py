"""Deleting the last manifest: plan reports every run as an orphan (validate still refuses)."""

from __future__ import annotations

from pathlib import Path

from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.manifest.validate import validate_paths
from himl_manifest.model import ActionKind
from himl_manifest.operations.plan import make_plan

MANIFEST = """\
apiVersion: himl/v1
kind: Experiment
name: hello
container: HelloWorld
seeds: 2
"""


def test_empty_folder_orphans_every_run(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "hello.yaml").write_text(MANIFEST)
    backend = MemoryBackend()
    first = make_plan([folder], backend)
    assert [a.kind for a in first.actions] == [ActionKind.CREATE, ActionKind.CREATE]
    backend.submit([a.run for a in first.actions if a.run is not None])

    (folder / "hello.yaml").unlink()
    after = make_plan([folder], backend)
    assert sorted(a.kind for a in after.actions) == [ActionKind.ORPHAN, ActionKind.ORPHAN]
    assert {a.run_name for a in after.actions} == {a.run_name for a in first.actions}
    # validate keeps calling an empty folder a mistake
    assert not validate_paths([folder]).ok
