"""`himl plan` end to end on real manifest files, with a MemoryBackend behind the registry."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from plan_helpers import apply_plan, manifest

from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.cli import plan_cmd
from himl_manifest.cli.main import cli, run_cli
from himl_manifest.operations.plan import check_fresh, make_plan
from himl_manifest.plan.render import MARKDOWN_MARKER
from himl_manifest.plan.serialize import plan_from_json


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    text = yaml.safe_dump(manifest("hello", seeds=2), sort_keys=False)
    (tmp_path / "experiments" / "hello.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch) -> MemoryBackend:
    store = MemoryBackend()
    opened: list[tuple[str, str | None]] = []

    def open_backend(name: str, tracking_uri: str | None) -> MemoryBackend:
        opened.append((name, tracking_uri))
        return store

    monkeypatch.setattr(plan_cmd, "open_backend", open_backend)
    store.opened = opened  # type: ignore[attr-defined]
    return store


def himl(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, ["plan", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_text_plan_and_detailed_exit_code(
    repo: Path, backend: MemoryBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = himl(capsys)
    assert code == 0 and out.rstrip().endswith("Plan: 2 to create.") and err == ""
    assert himl(capsys, "--detailed-exitcode")[0] == 2
    apply_plan(make_plan(["experiments"], backend), backend)
    code, out, _ = himl(capsys, "--detailed-exitcode", "experiments")
    assert (code, out) == (0, "No changes.\n")
    assert backend.opened[0] == ("auto", None)  # type: ignore[attr-defined]


def test_options_reach_the_backend_and_the_planner(
    repo: Path, backend: MemoryBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = himl(
        capsys,
        "--backend",
        "memory",
        "--tracking-uri",
        "sqlite:///x.db",
        "--target",
        "hello",
        "--retry-failed",
        "--format",
        "json",
    )
    document = json.loads(out)
    assert code == 0 and document["meta"]["targets"] == ["hello"]
    assert document["meta"]["retry_failed"] is True
    assert backend.opened[-1] == ("memory", "sqlite:///x.db")  # type: ignore[attr-defined]
    assert himl(capsys, "--target", "nope")[0] == 64


def test_markdown_format(
    repo: Path, backend: MemoryBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = himl(capsys, "--format", "markdown")
    assert code == 0 and out.startswith(MARKDOWN_MARKER + "\n")


def test_saved_plan_is_written_and_fresh(
    repo: Path, backend: MemoryBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = himl(capsys, "-o", "plans/plan.json", "--format", "json")
    assert code == 0 and "Saved the plan to plans/plan.json" in err
    json.loads(out)  # stdout holds only the machine-readable plan
    saved = plan_from_json((repo / "plans" / "plan.json").read_text())
    assert all(a.run is not None for a in saved.actions)
    check_fresh(saved, backend)


def test_invalid_manifests_exit_1_with_diagnostics(
    repo: Path, backend: MemoryBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "experiments" / "bad.yaml").write_text(
        "apiVersion: himl/v1\nkind: Experiment\nname: bad\ncontainer: X\ntrainer:\n  max_epoch: 3\n"
    )
    code, out, err = himl(capsys, "--detailed-exitcode")
    assert code == 1 and out == ""
    assert "bad.yaml:6:3" in err and "max_epochs" in err


def test_plan_with_the_memory_backend_stays_light(repo: Path) -> None:
    """Through the real registry: no torch, Lightning, MLflow or Azure at start-up."""
    script = (
        "import sys\n"
        "from himl_manifest.cli.main import cli, run_cli\n"
        "code = run_cli(cli, ['plan', '--backend', 'memory', '--no-color'])\n"
        "heavy = [m for m in ('torch', 'lightning', 'pytorch_lightning', 'mlflow', 'azure')"
        " if m in sys.modules]\n"
        "print(code, heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=repo, check=True
    )
    assert done.stdout.splitlines()[-1] == "0 []", done.stderr
    assert "Plan: 2 to create." in done.stdout
