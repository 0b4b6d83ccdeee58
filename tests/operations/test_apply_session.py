"""The apply session (`operations.apply.run_session`): its phases in order, what it shows
through its view, one read of the store, and no store opened for invalid manifests."""

from __future__ import annotations

from pathlib import Path

import pytest
from apply_helpers import commit, init_repo, write_manifest

from himl_manifest.backends.base import Backend, Progress
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import HimlError, ManifestError
from himl_manifest.operations.apply import ApplyRequest, run_session
from himl_manifest.plan.model import Plan


class Recorder:
    """A view that records what the session showed, in order."""

    def __init__(self, decline: bool = False) -> None:
        self.shown: list[str] = []
        self.decline = decline

    def plan(self, plan: Plan) -> None:
        self.shown.append(f"plan {len(plan.actions)}")

    def nothing_to_do(self, plan: Plan) -> None:
        self.shown.append("nothing")

    def problems(self, diagnostics: list[Diagnostic]) -> None:
        self.shown.append(f"problems {len(diagnostics)}")

    def warning(self, text: str) -> None:
        self.shown.append("warning")

    def confirm(self) -> None:
        self.shown.append("confirm")
        if self.decline:
            raise HimlError("declined")

    def waiting_elsewhere(self, runs: list[str]) -> None:
        self.shown.append(f"waiting {len(runs)}")

    def progress(self, event: Progress) -> None:
        self.shown.append(f"{event.status} {event.run_name}")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = init_repo(tmp_path / "repo")
    write_manifest(root, name="hello", seeds=[0, 1])
    commit(root, "two seeds")
    monkeypatch.chdir(root)
    return root


def test_the_phases_run_in_order_and_the_store_is_read_once(repo: Path) -> None:
    backend = MemoryBackend()
    view = Recorder()
    result = run_session(ApplyRequest(confirmed=True), lambda: backend, view)
    assert result is not None and result.ok
    assert view.shown[:2] == ["plan 2", "confirm"]
    assert sorted(view.shown[2:]) == sorted(f"completed {r.run_name}" for r in backend.records())
    assert backend.queries == 1  # the plan's one bulk read; waiting reads no listing
    assert all(r.provenance.get("head_commit") for r in backend.records())
    again = Recorder()
    assert run_session(ApplyRequest(confirmed=True), lambda: backend, again) is None
    assert again.shown == ["plan 2", "nothing"]


def test_declining_changes_nothing(repo: Path) -> None:
    backend = MemoryBackend()
    with pytest.raises(HimlError, match="declined"):
        run_session(ApplyRequest(), lambda: backend, Recorder(decline=True))
    assert backend.records() == []


def test_invalid_manifests_open_no_store(repo: Path) -> None:
    (repo / "experiments" / "broken.yaml").write_text("name: [\n", encoding="utf-8")
    opened: list[Backend] = []

    def open_backend() -> Backend:
        opened.append(MemoryBackend())
        return opened[-1]

    with pytest.raises(ManifestError):
        run_session(ApplyRequest(confirmed=True), open_backend, Recorder())
    assert opened == []
