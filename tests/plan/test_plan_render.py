"""Renderers: the summary line, text, JSON (himl-plan/v1) and the Markdown PR comment."""

from __future__ import annotations

import json

import pytest
from plan_helpers import experiment, record, run_of, runs

from himl_manifest.model import ActionKind, RunStatus
from himl_manifest.plan.model import Action, FieldChange, Plan
from himl_manifest.plan.order import experiment_statuses
from himl_manifest.plan.planner import plan
from himl_manifest.plan.render import (
    MARKDOWN_MARKER,
    render,
    render_json,
    render_markdown,
    render_text,
    summary_line,
)


def make(*kinds: str) -> Plan:
    actions = tuple(
        Action(kind=kind, experiment="exp", seed=i, run_name=f"exp-s{i}-0000000{i}", reason="r")
        for i, kind in enumerate(kinds)
    )
    return Plan(actions=actions, experiments=experiment_statuses(actions))


@pytest.mark.parametrize(
    ("kinds", "line"),
    [
        ((), "No changes."),
        ((ActionKind.KEEP, ActionKind.KEEP), "No changes."),
        ((ActionKind.KEEP, ActionKind.WAIT), "No changes."),
        (
            (
                ActionKind.CREATE,
                ActionKind.CREATE,
                ActionKind.RESUME,
                ActionKind.UPDATE,
                ActionKind.KEEP,
                ActionKind.KEEP,
                ActionKind.KEEP,
            ),
            "Plan: 2 to create, 1 to resume, 1 to update, 3 unchanged.",
        ),
        ((ActionKind.CREATE,), "Plan: 1 to create."),
        (
            (
                ActionKind.REPLACE,
                ActionKind.RETRY,
                ActionKind.WAIT,
                ActionKind.ORPHAN,
                ActionKind.ORPHAN,
                ActionKind.KEEP,
            ),
            "Plan: 1 to replace, 1 to retry, 1 waiting, 2 orphaned, 1 unchanged.",
        ),
        ((ActionKind.ORPHAN,), "Plan: 1 orphaned."),
    ],
)
def test_summary_line(kinds: tuple[str, ...], line: str) -> None:
    assert summary_line(make(*kinds)) == line


def test_in_sync_text_is_just_no_changes() -> None:
    desired = runs(experiment("exp", seeds=3))
    result = plan(desired, [record(r) for r in desired])
    assert render_text(result) == "No changes."


def test_text_groups_by_experiment_with_changes_and_reasons() -> None:
    old = run_of("exp", params={"lr": 0.1}, description="a")
    new = run_of("exp", params={"lr": 0.2}, description="a")
    other = run_of("other")
    result = plan([new, other], [record(old), record(other, RunStatus.FAILED)])
    text = render_text(result)
    assert text.splitlines() == [
        "exp  experiments/exp.yaml  [not in sync, healthy]",
        f"  -/+ {new.run_name}  replace: run-affecting fields changed (params.lr): "
        "a new run replaces it",
        "        params.lr: 0.1 → 0.2",
        "",
        "other  experiments/other.yaml  [in sync, failed]",
        f"  =   {other.run_name}  keep: attempt 1 failed; not retried: pass --retry-failed "
        "or set retry.on_failure: true to retry it",
        "",
        "Plan: 1 to replace, 1 unchanged.",
    ]


def test_text_counts_unchanged_runs_and_shows_dependencies_and_strings_quoted() -> None:
    upstream = experiment("pre", seeds=[0])
    dependent = experiment("fine", checkpoint={"source": {"experiment": "pre"}})
    desired = runs(upstream, dependent)
    result = plan(desired, [])
    text = render_text(result)
    assert f"        waits for {desired[0].run_name}" in text
    # the Markdown plan shows the dependency too, in the row of the dependent run
    (row,) = [line for line in render_markdown(result).splitlines() if "| create | fine |" in line]
    assert f"<br>waits for <code>{desired[0].run_name}</code>" in row
    cosmetic = plan(
        [run_of("x", seeds=[0, 1], description="new")],
        [record(r) for r in runs(experiment("x", seeds=[0, 1], description="old"))],
    )
    assert '        description: "old" → "new"' in render_text(cosmetic)


def test_text_colours_only_when_asked() -> None:
    result = plan([run_of("exp")], [])
    assert "\x1b[" not in render_text(result)
    assert "\x1b[" in render_text(result, color=True)
    assert "\x1b[" not in render(result, "json", color=True)


def test_json_document_shape() -> None:
    old = run_of("exp", trainer={"max_epochs": 10})
    new = run_of("exp", trainer={"max_epochs": 20})
    result = plan([new], [record(old)])
    document = json.loads(render_json(result))
    assert set(document) == {
        "format",
        "version",
        "fingerprint",
        "meta",
        "summary",
        "experiments",
        "actions",
        "warnings",
    }
    assert document["warnings"] == []
    assert (document["format"], document["version"]) == ("himl-plan/v1", 1)
    assert document["summary"]["resume"] == 1 and document["summary"]["has_changes"] is True
    assert document["experiments"] == [
        {
            "name": "exp",
            "manifest_path": "experiments/exp.yaml",
            "in_sync": False,
            "health": "healthy",
        }
    ]
    (action,) = document["actions"]
    assert action["kind"] == "resume" and action["symbol"] == ">"
    assert action["changes"] == [{"path": "trainer.max_epochs", "old": 10, "new": 20}]
    assert action["previous"] == old.run_name and action["spec_hash"] == new.spec_hash
    assert "run" not in action  # run specs only in saved plans


def test_markdown_starts_with_the_marker_and_has_a_table() -> None:
    result = plan([run_of("exp", params={"note": "a|b"})], [])
    text = render_markdown(result)
    lines = text.splitlines()
    assert lines[0] == MARKDOWN_MARKER == "<!-- himl-plan -->"
    assert "**Plan: 1 to create.**" in lines
    assert "| | Action | Experiment | Seed | Run | Changes | Why |" in lines
    row = next(line for line in lines if line.startswith("| <code>+</code>"))
    assert "| create | exp | 0 |" in row
    in_sync = render_markdown(plan([], []))
    assert in_sync.startswith(MARKDOWN_MARKER) and "**No changes.**" in in_sync


def test_markdown_escapes_table_breakers() -> None:
    action = Action(
        kind=ActionKind.UPDATE,
        experiment="exp",
        seed=0,
        run_name="exp-s0-00000000",
        reason="a | b\nc",
        changes=(FieldChange("description", "x|y", "<b>"),),
    )
    text = render_markdown(Plan(actions=(action,)))
    row = next(line for line in text.splitlines() if line.startswith("| <code>~</code>"))
    assert row.count(" | ") == 6  # seven cells, no extra separators
    assert "&lt;b&gt;" in row and "<br>" in row


def test_waiting_runs_are_listed_in_text() -> None:
    run = run_of("exp")
    text = render_text(plan([run], [record(run, RunStatus.RUNNING)]))
    assert "[in sync, running]" in text and "…" in text and text.endswith("No changes.")
