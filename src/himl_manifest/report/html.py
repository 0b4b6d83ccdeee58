"""One self-contained HTML page of a report: its tables, and its figures embedded as base64
PNG data URIs. No script, no stylesheet or font from elsewhere: it opens offline, and can be
attached to a CI run as a single file."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

from himl_manifest.report.compare import number
from himl_manifest.report.model import ExperimentReport, Report
from himl_manifest.report.plots import Drawn
from himl_manifest.report.render import better

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child { text-align: left; font-family: monospace; }
.warn { background: #fff4ce; border-left: 4px solid #e0a800; padding: 0.5em 1em; }
figure { display: inline-block; margin: 0.5em; }
img { max-width: 520px; border: 1px solid #eee; }
"""


def _e(text: object) -> str:
    return html.escape(str(text))


def _table(experiment: ExperimentReport) -> list[str]:
    if not experiment.summaries:
        return ["<p>No completed run with metrics.</p>"]
    head = ["metric", "better", "n", "mean", "std", "95% CI", "min", "max"]
    rows = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for metric, s in experiment.summaries.items():
        cells = [
            metric,
            better(experiment.directions[metric]),
            s.n,
            number(s.mean),
            number(s.std),
            "-" if s.ci is None else f"±{s.ci:.4g}",
            number(s.min),
            number(s.max),
        ]
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return rows


def _image(drawn: Drawn) -> str:
    data = base64.b64encode(drawn.path.read_bytes()).decode("ascii")
    alt = f"{drawn.experiment}: {drawn.metric}, {drawn.runs} runs, mean ± 1 std"
    return (
        f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{_e(drawn.metric)}</figcaption></figure>"
    )


def page(report: Report, drawn: Sequence[Drawn], title: str = "himl report") -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    if report.incomplete:
        items = "".join(f"<li>{_e(line)}</li>" for line in report.incomplete_lines())
        parts.append(
            '<div class="warn"><b>Incomplete results</b>: the statistics count completed runs '
            f"only.<ul>{items}</ul></div>"
        )
    parts += [f'<p class="warn">{_e(w)}</p>' for w in report.warnings]
    for experiment in report.experiments:
        parts.append(f"<h2>{_e(experiment.name)}</h2>")
        parts.append(f"<p>{_e(experiment.status_line())} (from the {_e(experiment.source)})</p>")
        parts += [f"<p><i>{_e(note)}</i></p>" for note in experiment.notes]
        parts += _table(experiment)
        parts += [_image(d) for d in drawn if d.experiment == experiment.name]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_page(report: Report, drawn: Sequence[Drawn], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page(report, drawn), encoding="utf-8")
    return path
