"""`himl runs`: every managed run, its status, its sync state against the manifests."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from himl_manifest.cli.options import backend_options, format_option

if TYPE_CHECKING:
    from himl_manifest.operations.runs import RunRow
    from himl_manifest.spec import RunSpec


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@format_option("json", help="text for people, json for tools (himl-runs/v1).")
@click.option(
    "--all",
    "show_all",
    is_flag=True,
    help="Every attempt, superseded and archived runs included.",
)
@backend_options
def runs(
    paths: tuple[Path, ...],
    output_format: str,
    show_all: bool,
    backend_name: str,
    tracking_uri: str | None,
) -> int:
    """List managed runs, compared with the manifests in PATHS (default: experiments/)."""
    from himl_manifest.backends.registry import open_backend
    from himl_manifest.operations.runs import run_rows

    backend = open_backend(backend_name, tracking_uri=tracking_uri)
    rows = run_rows(backend.list_runs(), _desired(paths), show_all=show_all)
    if output_format == "json":
        from himl_manifest.operations.runs import RUNS_FORMAT

        document = {"format": RUNS_FORMAT, "runs": [row.to_dict() for row in rows]}
        click.echo(json.dumps(document, indent=2, sort_keys=True))
    else:
        click.echo(render_rows(rows, Path.cwd()))
        if rows:
            click.echo(ui_pointer())
    return 0


def ui_pointer() -> str:
    """Where to browse the runs: `himl ui`, and the MLflow UI's filter for the live ones."""
    from himl_manifest.operations.runs import LIVE_RUNS_FILTER

    return f"Browse them in the MLflow UI: himl ui (live runs: {LIVE_RUNS_FILTER})"


def _desired(paths: tuple[Path, ...]) -> Sequence[RunSpec] | None:
    """The manifests' run specs; None when no paths were given and experiments/ is absent."""
    if not paths and not Path("experiments").exists():
        return None
    from himl_manifest.errors import ManifestError
    from himl_manifest.operations.plan import desired_runs

    try:
        return desired_runs(list(paths) or ["experiments"])
    except ManifestError as exc:
        if paths:
            raise
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        why = lines[1] if len(lines) > 1 else lines[0] if lines else "invalid"
        click.echo(f"warning: manifests not read ({why}): sync state unknown", err=True)
        return None


def _when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return dt.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def _queued(row: RunRow) -> str:
    """Queue time; ``?`` for an ended run that did not record when it started (its TOOK is
    then the whole time since it was queued)."""
    if row.queued_s is not None:
        return _duration(row.queued_s)
    return "?" if row.run_s is None and row.duration_s is not None else "-"


def _short_path(path: str | None, base: Path) -> str:
    if not path:
        return "-"
    try:
        return Path(path).relative_to(base).as_posix()
    except ValueError:
        return path


def render_rows(rows: Sequence[RunRow], base: Path) -> str:
    """An aligned table, failed runs followed by the last lines of their error tail. STARTED
    is when the run was queued, QUEUED how long it waited, TOOK how long it ran."""
    from himl_manifest.operations.runs import failed_tail, key_metrics

    if not rows:
        return "No managed runs."
    links = any(row.url for row in rows)  # the column only when some run has a studio link
    header: tuple[str, ...] = ("RUN", "SEED", "TRY", "STATUS", "SYNC", "STARTED", "QUEUED")
    header += ("TOOK",)
    header += ("METRICS", "OUTPUT")
    header += ("LINK",) if links else ()
    table = [header]
    for row in rows:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in key_metrics(row.metrics).items())
        cells: tuple[str, ...] = (
            row.run_name,
            str(row.seed),
            str(row.attempt),
            row.status,
            row.sync,
            _when(row.start_time),
            _queued(row),
            _duration(row.run_s if row.run_s is not None else row.duration_s),
            metrics or "-",
            _short_path(row.output_dir, base),
        )
        table.append(cells + ((row.url or "-",) if links else ()))
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = []
    for index, line in enumerate(table):
        lines.append(
            "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        )
        if index:
            lines.extend(f"    | {tail}" for tail in failed_tail(rows[index - 1]))
    return "\n".join(lines)
