"""Plans for people and tools: text (a terminal), JSON (``himl-plan/v1``), Markdown (a PR comment).

Each renderer is a pure function ``(plan, color=False) -> str``; the CLI prints the result.
"""

from __future__ import annotations

import html
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from himl_manifest.code_identity import short
from himl_manifest.model import ActionKind, Health, RunStatus
from himl_manifest.plan.model import SYMBOLS, Action, ExperimentStatus, FieldChange, Plan
from himl_manifest.plan.planner import CODE_IDENTITY
from himl_manifest.plan.serialize import plan_document

#: The hidden first line of the Markdown rendering: a workflow finds its earlier comment by it.
MARKDOWN_MARKER = "<!-- himl-plan -->"
NO_CHANGES = "No changes."

#: Summary phrases, in summary order.
_PHRASES = (
    (ActionKind.CREATE, "{} to create"),
    (ActionKind.REPLACE, "{} to replace"),
    (ActionKind.RESUME, "{} to resume"),
    (ActionKind.RETRY, "{} to retry"),
    (ActionKind.UPDATE, "{} to update"),
    (ActionKind.WAIT, "{} waiting"),
    (ActionKind.ORPHAN, "{} orphaned"),
    (ActionKind.KEEP, "{} unchanged"),
)
_COLORS = {
    ActionKind.CREATE: "green",
    ActionKind.UPDATE: "yellow",
    ActionKind.REPLACE: "red",
    ActionKind.RESUME: "cyan",
    ActionKind.RETRY: "magenta",
    ActionKind.WAIT: "blue",
    ActionKind.ORPHAN: "bright_black",
    ActionKind.KEEP: "bright_black",
}
_MAX_VALUE = 80


def summary_line(plan: Plan) -> str:
    """``Plan: 2 to create, 1 to resume, 1 to update, 3 unchanged.``, or ``No changes.``"""
    if not plan.has_changes:
        return NO_CHANGES
    parts = [phrase.format(n) for kind, phrase in _PHRASES if (n := plan.count(kind))]
    return f"Plan: {', '.join(parts)}."


def format_value(value: Any, limit: int = _MAX_VALUE) -> str:
    """A field value as JSON (strings quoted, ``null`` for absent), shortened when long."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def code_change(change: FieldChange) -> str | None:
    """``code changed: myproj/ (abc1234 → def5678)`` for a change of a code identity."""
    if not change.path.startswith(CODE_IDENTITY):
        return None
    old, new = (v if isinstance(v, str) else None for v in (change.old, change.new))
    return f"code changed: {change.path[len(CODE_IDENTITY) :]} ({short(old)} → {short(new)})"


def format_change(change: FieldChange) -> str:
    code = code_change(change)
    if code is not None:
        return code
    return f"{change.path}: {format_value(change.old)} → {format_value(change.new)}"


def _shown(action: Action) -> bool:
    """Unchanged runs are counted, not listed, unless their latest attempt did not succeed."""
    return action.kind != ActionKind.KEEP or action.observed_status in (
        RunStatus.FAILED,
        RunStatus.CANCELLED,
    )


def _grouped(plan: Plan) -> dict[str, list[Action]]:
    groups: dict[str, list[Action]] = defaultdict(list)
    for action in plan.actions:
        groups[action.experiment].append(action)
    return groups


# --- text -------------------------------------------------------------------------------------


def render_text(plan: Plan, color: bool = False) -> str:
    """Grouped by experiment; experiments in sync and healthy are left out. Ends with the
    summary line."""

    def paint(text: str, kind: ActionKind, bold: bool = False) -> str:
        if not color:
            return text
        import click

        return click.style(text, fg=_COLORS[kind], bold=bold)

    lines: list[str] = []
    groups = _grouped(plan)
    for status in plan.experiments:
        actions = groups.get(status.experiment, [])
        shown = [a for a in actions if _shown(a)]
        if not shown and status.in_sync and status.health in (Health.HEALTHY, "none"):
            continue
        lines.append(_experiment_header(status))
        for action in shown:
            symbol = paint(f"{SYMBOLS[action.kind]:<3}", action.kind, bold=True)
            label = paint(action.kind, action.kind)
            lines.append(f"  {symbol} {action.run_name}  {label}: {action.reason}")
            if action.depends_on:
                lines.append(f"        waits for {', '.join(action.depends_on)}")
            if action.blocked:
                lines.append(f"        blocked: {action.blocked}")
            lines.extend(f"        {format_change(change)}" for change in action.changes)
        unchanged = len(actions) - len(shown)
        if unchanged:
            noun = "run" if unchanged == 1 else "runs"
            symbol = paint(f"{SYMBOLS[ActionKind.KEEP]:<3}", ActionKind.KEEP)
            lines.append(f"  {symbol} {unchanged} {noun} unchanged")
        lines.append("")
    for warning in plan.warnings:
        lines.append(f"Warning: {warning}")
    if plan.warnings:
        lines.append("")
    lines.append(summary_line(plan))
    return "\n".join(lines)


def _experiment_header(status: ExperimentStatus) -> str:
    sync = "in sync" if status.in_sync else "not in sync"
    where = f"  {status.manifest_path}" if status.manifest_path else ""
    return f"{status.experiment}{where}  [{sync}, {status.health}]"


# --- JSON -------------------------------------------------------------------------------------


def render_json(plan: Plan, color: bool = False) -> str:
    """The ``himl-plan/v1`` document without run specs (see docs/plan.md)."""
    return json.dumps(plan_document(plan, include_runs=False), indent=2, sort_keys=True)


# --- Markdown ---------------------------------------------------------------------------------


def _cell(text: str) -> str:
    return html.escape(text, quote=False).replace("|", "&#124;").replace("\n", "<br>")


def _code(text: str) -> str:
    return f"<code>{_cell(text)}</code>"


def _markdown_change(change: FieldChange) -> str:
    code = code_change(change)
    if code is not None:
        return _cell(code)
    old, new = format_value(change.old, 60), format_value(change.new, 60)
    return f"{_code(change.path)}: {_code(old)} → {_code(new)}"


def _markdown_row(action: Action) -> str:
    changes = "<br>".join(_markdown_change(c) for c in action.changes)
    why = _cell(action.reason)
    if action.depends_on:
        why += "<br>waits for " + ", ".join(_code(name) for name in action.depends_on)
    if action.blocked:
        why += "<br>blocked: " + _cell(action.blocked)
    cells = [
        _code(SYMBOLS[action.kind]),
        action.kind,
        _cell(action.experiment),
        str(action.seed),
        _code(action.run_name),
        changes,
        why,
    ]
    return "| " + " | ".join(cells) + " |"


def _markdown_experiments(statuses: Sequence[ExperimentStatus]) -> list[str]:
    rows = [
        "| Experiment | Manifest | In sync | Health |",
        "|---|---|---|---|",
    ]
    for status in statuses:
        sync = "yes" if status.in_sync else "**no**"
        rows.append(
            f"| {_cell(status.experiment)} | {_code(status.manifest_path)} | {sync} "
            f"| {status.health} |"
        )
    return rows


def render_markdown(plan: Plan, color: bool = False) -> str:
    """A pull-request comment: the hidden marker, the summary, a table of what would change."""
    lines = [MARKDOWN_MARKER, "### `himl plan`", "", f"**{summary_line(plan)}**", ""]
    shown = [a for a in plan.actions if _shown(a)]
    if shown:
        lines += [
            "| | Action | Experiment | Seed | Run | Changes | Why |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [_markdown_row(action) for action in shown]
        lines.append("")
    for warning in plan.warnings:
        lines += [f"> **Warning:** {_cell(warning)}", ""]
    if plan.experiments:
        lines += ["<details><summary>Experiments</summary>", ""]
        lines += _markdown_experiments(plan.experiments)
        lines += ["", "</details>", ""]
    lines.append(f"<sub>plan fingerprint <code>{plan.fingerprint}</code></sub>")
    return "\n".join(lines)


Renderer = Callable[[Plan, bool], str]
RENDERERS: dict[str, Renderer] = {
    "text": render_text,
    "json": render_json,
    "markdown": render_markdown,
}


def render(plan: Plan, output_format: str = "text", *, color: bool = False) -> str:
    return RENDERERS[output_format](plan, color)
