"""`--replace RUN` (plan and apply), and the wording of a max_epochs raise without a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from plan_helpers import apply_plan, manifest, record, run_of

from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.cli import plan_cmd
from himl_manifest.cli.main import cli, run_cli
from himl_manifest.errors import ConfigError, UsageError
from himl_manifest.model import ActionKind, RunStatus
from himl_manifest.operations.apply import prepare
from himl_manifest.operations.plan import check_fresh, make_plan
from himl_manifest.plan.model import Plan
from himl_manifest.plan.planner import plan
from himl_manifest.plan.serialize import plan_from_json, plan_to_json


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    for name in ("hello", "other"):
        text = yaml.safe_dump(manifest(name, seeds=2), sort_keys=False)
        (tmp_path / "experiments" / f"{name}.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def applied(repo: Path) -> MemoryBackend:
    """Every run of the manifests completed: the plan is `No changes.`."""
    backend = MemoryBackend()
    apply_plan(make_plan(["experiments"], backend), backend)
    assert not make_plan(["experiments"], backend).has_changes
    return backend


def changed(result: Plan) -> list[tuple[str, int]]:
    return [(a.experiment, a.seed) for a in result.actions if a.kind == ActionKind.REPLACE]


def test_replace_an_experiment_a_seed_or_a_run_in_sync(applied: MemoryBackend) -> None:
    every = make_plan(["experiments"], applied, replace_runs=["hello"])
    assert changed(every) == [("hello", 0), ("hello", 1)]
    one = make_plan(["experiments"], applied, replace_runs=["hello:1"])
    assert changed(one) == [("hello", 1)]
    name = next(a.run_name for a in one.actions if (a.experiment, a.seed) == ("other", 0))
    by_name = make_plan(["experiments"], applied, replace_runs=[name, "hello:0"])
    assert changed(by_name) == [("hello", 0), ("other", 0)]
    (action,) = [a for a in one.actions if a.kind == ActionKind.REPLACE]
    assert action.reason.startswith(f"replace requested: attempt 2 of {action.run_name} runs")
    assert (action.attempt, action.previous) == (2, None)
    assert one.meta["replace"] == ["hello:1"]


def test_applying_a_replace_makes_a_new_attempt_and_then_nothing(applied: MemoryBackend) -> None:
    forced = make_plan(["experiments"], applied, replace_runs=["hello:0"])
    apply_plan(forced, applied)
    (action,) = [a for a in forced.actions if a.kind == ActionKind.REPLACE]
    attempts = [r.attempt for r in applied.list_runs() if r.run_name == action.run_name]
    assert sorted(attempts) == [1, 2]
    assert not make_plan(["experiments"], applied).has_changes


def test_replace_wins_over_resume_and_waits_for_a_running_run(applied: MemoryBackend) -> None:
    old = run_of("exp", trainer={"max_epochs": 10})
    new = run_of("exp", trainer={"max_epochs": 20})
    (resumed,) = plan([new], [record(old)]).actions
    assert resumed.kind == ActionKind.RESUME
    (forced,) = plan([new], [record(old)], forced={("exp", 0)}).actions
    assert (forced.kind, forced.previous, forced.run.resume_from) == (  # type: ignore[union-attr]
        ActionKind.REPLACE,
        old.run_name,
        None,
    )
    assert forced.reason.startswith(f"replace requested: a new run replaces {old.run_name}")
    (waiting,) = plan([old], [record(old, RunStatus.RUNNING)], forced={("exp", 0)}).actions
    assert waiting.kind == ActionKind.WAIT and waiting.reason.startswith("replace requested, but")
    (created,) = plan([old], [], forced={("exp", 0)}).actions
    assert created.kind == ActionKind.CREATE and created.reason.endswith("nothing to replace)")


def test_an_unknown_run_is_a_usage_error_with_a_hint(applied: MemoryBackend) -> None:
    with pytest.raises(UsageError, match=r"--replace 'helo'.*did you mean 'hello'\?"):
        make_plan(["experiments"], applied, replace_runs=["helo"])
    with pytest.raises(UsageError, match=r"--replace 'hello:7': hello has no seed 7 \(0, 1\)"):
        make_plan(["experiments"], applied, replace_runs=["hello:7"])


def test_a_saved_plan_carries_the_replace(applied: MemoryBackend, repo: Path) -> None:
    forced = make_plan(["experiments"], applied, replace_runs=["other"])
    saved = plan_from_json(plan_to_json(forced))
    assert changed(saved) == [("other", 0), ("other", 1)]
    check_fresh(saved, applied)  # re-planned with the same --replace: the same actions

    document = json.loads(plan_to_json(forced))
    document["meta"]["replace"] = ["hello"]  # tampered: refused by the digest
    with pytest.raises(ConfigError, match="does not match its digest"):
        plan_from_json(json.dumps(document))

    plain = plan_from_json(plan_to_json(make_plan(["experiments"], applied)))
    plain_file = repo / "plan.json"
    plain_file.write_text(plan_to_json(plain))
    with pytest.raises(UsageError, match="fixed by a saved plan"):
        prepare([plain_file], lambda: applied, replace_runs=["hello"])


def test_plan_cli_replace(
    applied: MemoryBackend, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(plan_cmd, "open_backend", lambda name, uri: applied)
    code = run_cli(cli, ["plan", "--replace", "hello:0", "--detailed-exitcode"])
    out, _ = capsys.readouterr()
    assert code == 2 and "replace: replace requested" in out
    assert out.rstrip().endswith("Plan: 1 to replace, 3 unchanged.")
    code = run_cli(cli, ["plan", "--replace", "nope"])
    _, err = capsys.readouterr()
    assert code == 64 and "--replace 'nope'" in err


def test_no_checkpoint_says_what_the_store_records() -> None:
    old = run_of("exp", trainer={"max_epochs": 10})
    new = run_of("exp", trainer={"max_epochs": 20})
    (action,) = plan([new], [record(old, has_checkpoint=False)]).actions
    assert action.kind == ActionKind.REPLACE
    assert action.reason == (
        f"max_epochs raised, but the run store records no checkpoint for {old.run_name} "
        "(resuming needs one): a new run replaces it"
    )
