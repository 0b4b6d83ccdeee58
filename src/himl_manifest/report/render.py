"""Reports and comparisons as text (a terminal), Markdown (a pull-request comment) and JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from himl_manifest.report.compare import Comparison, number
from himl_manifest.report.metrics import MINIMIZE
from himl_manifest.report.model import ExperimentReport, Report
from himl_manifest.report.stats import Summary

#: First line of every Markdown comparison: lets a CI step find and update its own comment.
COMMENT_MARKER = "<!-- himl-compare -->"


def better(direction: str) -> str:
    return "lower" if direction == MINIMIZE else "higher"


def _ci(summary: Summary) -> str:
    return "-" if summary.ci is None else f"±{summary.ci:.4g}"


def _summary_cells(metric: str, direction: str, summary: Summary) -> list[str]:
    return [
        metric,
        better(direction),
        str(summary.n) + (f" ({summary.nan} NaN)" if summary.nan else ""),
        number(summary.mean),
        number(summary.std),
        _ci(summary),
        number(summary.min),
        number(summary.max),
    ]


def _level(experiment: ExperimentReport) -> str:
    levels = {summary.level for summary in experiment.summaries.values()}
    return f"{round(100 * levels.pop())}% CI" if len(levels) == 1 else "CI"


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Aligned columns, the first row a header; numbers (after the first column) right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = []
        for column, (cell, width) in enumerate(zip(row, widths, strict=True)):
            numeric = index and column > 1 and cell[:1] in "-+±0123456789"
            cells.append(cell.rjust(width) if numeric else cell.ljust(width))
        lines.append(indent + "  ".join(cells).rstrip())
    return lines


def markdown_table(rows: Sequence[Sequence[str]], align: str) -> list[str]:
    """``align``: one character per column, ``l`` or ``r``."""
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(rows[0]) + " |", "| " + " | ".join(marks) + " |"]
    lines += [
        "| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]
    ]
    return lines


# --- reports -------------------------------------------------------------------------------


def report_text(report: Report) -> str:
    lines: list[str] = []
    if report.incomplete:
        lines.append("INCOMPLETE RESULTS: the statistics count completed runs only")
        lines += [f"  {line}" for line in report.incomplete_lines()]
        lines.append("")
    lines += [f"warning: {w}" for w in report.warnings]
    if not report.experiments:
        lines.append("No experiments to report.")
    for experiment in report.experiments:
        lines.append(f"{experiment.name}  ({experiment.source}: {experiment.status_line()})")
        lines += [f"  note: {note}" for note in experiment.notes]
        if experiment.summaries:
            header = ["METRIC", "BETTER", "N", "MEAN", "STD", _level(experiment), "MIN", "MAX"]
            rows = [header] + [
                _summary_cells(m, experiment.directions[m], s)
                for m, s in experiment.summaries.items()
            ]
            lines += table(rows, indent="  ")
        else:
            lines.append("  no completed run with metrics")
        lines += _run_lines(experiment)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _run_lines(experiment: ExperimentReport) -> list[str]:
    lines = []
    for run in experiment.runs:
        if run.outcome != "completed":
            lines.append(f"  {run.unit.label}: {run.outcome.value} ({run.run_name})")
            tail = run.error_tail.strip().splitlines()[-3:]
            lines += [f"    | {line}" for line in tail]
    return lines


def report_markdown(report: Report) -> str:
    lines = ["## himl report", ""]
    if report.incomplete:
        lines.append("> **Incomplete results**: the statistics count completed runs only.")
        lines += [f"> - {line}" for line in report.incomplete_lines()]
        lines.append("")
    lines += [f"> warning: {w}" for w in report.warnings]
    for experiment in report.experiments:
        lines += [f"### {experiment.name}", ""]
        lines += [f"{experiment.status_line()} (runs chosen from the {experiment.source})", ""]
        lines += [f"_{note}_" for note in experiment.notes]
        if experiment.summaries:
            header = ["metric", "better", "n", "mean", "std", _level(experiment), "min", "max"]
            rows = [header] + [
                [f"`{c}`" if i == 0 else c for i, c in enumerate(_summary_cells(m, d, s))]
                for (m, s), d in zip(
                    experiment.summaries.items(), experiment.directions.values(), strict=True
                )
            ]
            lines += markdown_table(rows, "llrrrrrr")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plain(value: Any) -> Any:
    """``value`` with every NaN or infinity as None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def report_json(report: Report) -> str:
    document = plain(report.to_dict())
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=str)


# --- comparisons ---------------------------------------------------------------------------


def _compare_rows(comparison: Comparison) -> list[list[str]]:
    rows = [["METRIC", "BETTER", "TEST", "N A", "N B", "MEAN A", "MEAN B", "B - A"]]
    rows[0] += [f"{round(100 * (1 - comparison.alpha))}% CI", "p", "EFFECT", "OUTCOME"]
    for item in comparison.metrics:
        r = item.result
        ci = "-" if r.ci_low is None else f"[{r.ci_low:+.4g}, {r.ci_high:+.4g}]"
        effect = "-" if r.effect is None else f"{item.result.effect_name}={r.effect:+.2f}"
        rows.append(
            [
                item.metric,
                better(item.direction),
                r.test,
                str(r.n_a),
                str(r.n_b),
                number(r.mean_a),
                number(r.mean_b),
                "-" if r.diff is None else f"{r.diff:+.4g}",
                ci,
                "-" if r.p is None else f"{r.p:.2g}",
                effect,
                item.outcome,
            ]
        )
    return rows


def compare_text(comparison: Comparison) -> str:
    a, b = comparison.a, comparison.b
    lines = [
        f"A = {comparison.label_a}: {a.status_line()}",
        f"B = {comparison.label_b}: {b.status_line()}",
        "",
    ]
    if comparison.metrics:
        lines += table(_compare_rows(comparison))
        lines += ["", "Verdicts:"] + [f"  {m.verdict()}" for m in comparison.metrics]
    else:
        lines.append("No metric in common: nothing to compare.")
    warnings = comparison.warnings()
    if warnings:
        lines += ["", "Warnings:"] + [f"  {w}" for w in warnings]
    if comparison.gates:
        lines += ["", "Gates:"] + [f"  {g.message}" for g in comparison.gates]
    return "\n".join(lines) + "\n"


def compare_markdown(comparison: Comparison) -> str:
    a, b = comparison.a, comparison.b
    lines = [
        COMMENT_MARKER,
        f"### himl compare: `{comparison.label_a}` (A) vs `{comparison.label_b}` (B)",
        "",
        f"- **A** `{comparison.label_a}`: {a.status_line()}",
        f"- **B** `{comparison.label_b}`: {b.status_line()}",
        "",
    ]
    for gate in comparison.gates:
        mark = "❌" if gate.failed else ("⚠️" if gate.error else "✅")
        lines.append(f"{mark} {gate.message}")
    if comparison.gates:
        lines.append("")
    if comparison.metrics:
        rows = _compare_rows(comparison)
        rows[0] = [cell.lower() for cell in rows[0]]
        rows = [rows[0]] + [[f"`{row[0]}`", *row[1:]] for row in rows[1:]]
        lines += markdown_table(rows, "lllrrrrrrrrl")
        lines += [""] + [f"- {m.verdict()}" for m in comparison.metrics]
    else:
        lines.append("No metric in common: nothing to compare.")
    warnings = comparison.warnings()
    if warnings:
        lines += [""] + [f"> ⚠️ {w}" for w in warnings]
    lines += [
        "",
        f"<sub>B - A with its {round(100 * (1 - comparison.alpha))}% confidence interval; "
        "paired t-test by seed and fold where both share them, Welch's otherwise; "
        "effect size d_z (paired) or Cohen's d.</sub>",
    ]
    return "\n".join(lines) + "\n"


def compare_json(comparison: Comparison) -> str:
    document = plain(comparison.to_dict())
    return json.dumps(document, indent=2, sort_keys=True, allow_nan=False, default=str)
