"""Saved plans (plan <-> JSON), make_plan over real files, and stale-plan detection."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from plan_helpers import apply_plan, manifest

from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.errors import ConfigError, ManifestError, StalePlanError, UsageError
from himl_manifest.model import ActionKind, RunStatus
from himl_manifest.operations.plan import check_fresh, make_plan
from himl_manifest.plan.model import Plan
from himl_manifest.plan.render import render_json
from himl_manifest.plan.serialize import plan_from_json, plan_to_json


def write(repo: Path, name: str, **fields: Any) -> Path:
    path = repo / "experiments" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(manifest(name, **fields), sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.11]\n")
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "pre", seeds=[0, 1])
    write(tmp_path, "fine", checkpoint={"source": {"experiment": "pre"}})
    return tmp_path


def test_make_plan_reads_the_store_once(repo: Path) -> None:
    backend = MemoryBackend()
    result = make_plan(["experiments"], backend)
    assert backend.queries == 1
    assert [a.kind for a in result.actions] == [
        ActionKind.CREATE,
        ActionKind.CREATE,
        ActionKind.CREATE,
    ]
    assert result.meta == {
        "paths": ["experiments"],
        "backend": "memory",
        "retry_failed": False,
        "targets": None,
    }
    # local runs: no conda environment is built, so the conda file is no part of their identity
    assert all(a.run is not None and a.run.conda_sha256 is None for a in result.actions)
    assert result.actions[0].manifest_path == "experiments/pre.yaml"


def test_make_plan_reports_invalid_manifests(repo: Path) -> None:
    (repo / "experiments" / "bad.yaml").write_text("apiVersion: himl/v1\nkind: Experiment\n")
    with pytest.raises(ManifestError, match=r"bad\.yaml"):
        make_plan(["experiments"], MemoryBackend())


def test_an_unknown_target_is_a_usage_error(repo: Path) -> None:
    with pytest.raises(UsageError, match="'nope'"):
        make_plan(["experiments"], MemoryBackend(), targets=["nope"])


def test_round_trip_keeps_every_field(repo: Path) -> None:
    backend = MemoryBackend()
    apply_plan(make_plan(["experiments"], backend), backend)
    write(repo, "pre", seeds=[0, 1], trainer={"max_epochs": 30}, description="longer")
    result = make_plan(["experiments"], backend)
    assert ActionKind.RESUME in [a.kind for a in result.actions]
    loaded = plan_from_json(plan_to_json(result))
    assert loaded == result
    assert plan_to_json(loaded) == plan_to_json(result)


def test_the_display_json_is_not_a_saved_plan(repo: Path) -> None:
    result = make_plan(["experiments"], MemoryBackend())
    with pytest.raises(ConfigError, match="-o FILE"):
        plan_from_json(render_json(result))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not a saved plan"),
        ('{"format": "himl-plan/v1", "version": 99}', "newer"),
        ('{"format": "himl-plan/v1", "version": 1}', "missing or has a bad field"),
    ],
)
def test_bad_saved_plans(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_from_json(text)


def test_a_fresh_plan_passes_and_a_changed_world_is_stale(repo: Path) -> None:
    backend = MemoryBackend(outcome=RunStatus.FAILED)
    apply_plan(make_plan(["experiments"], backend), backend)
    saved = plan_from_json(plan_to_json(make_plan(["experiments"], backend, retry_failed=True)))
    check_fresh(saved, backend)  # nothing changed
    # the options are part of the plan: re-planned with --retry-failed as saved
    assert saved.meta["retry_failed"] is True
    # a run changes in the store
    backend.finish(saved.actions[0].run_name, RunStatus.COMPLETED)
    with pytest.raises(StalePlanError, match="stale"):
        check_fresh(saved, backend)


def test_a_manifest_edit_makes_a_saved_plan_stale(repo: Path) -> None:
    backend = MemoryBackend()
    saved = make_plan(["experiments"], backend)
    write(repo, "pre", seeds=[0, 1], description="edited")
    with pytest.raises(StalePlanError):
        check_fresh(saved, backend)


def test_another_backend_is_refused(repo: Path) -> None:
    saved = make_plan(["experiments"], MemoryBackend())
    other = MemoryBackend()
    other.name = "local"
    with pytest.raises(StalePlanError, match="'memory' backend"):
        check_fresh(saved, other)
    with pytest.raises(StalePlanError, match="which manifests"):
        check_fresh(Plan(actions=(), meta={"backend": "memory"}), MemoryBackend())


def test_targeted_plans_are_re_planned_with_their_targets(repo: Path) -> None:
    backend = MemoryBackend()
    saved = make_plan(["experiments"], backend, targets=["pre"])
    assert {a.experiment for a in saved.actions} == {"pre"}
    write(repo, "fine", checkpoint={"source": {"experiment": "pre"}}, description="x")
    check_fresh(saved, backend)  # an edit outside the targets does not matter
    apply_plan(saved, backend)
    assert [a.kind for a in make_plan(["experiments"], backend, targets=["pre"]).actions] == [
        ActionKind.KEEP,
        ActionKind.KEEP,
    ]
    document = json.loads(plan_to_json(saved))
    assert document["meta"]["targets"] == ["pre"]
