"""`himl plan`: show what apply would change, and optionally save the plan for `himl apply`.

``--detailed-exitcode`` (the drift check): 0 when the plan is clean, 2 when anything would
change, orphaned runs included (a run whose manifest or seed is gone leaves the store out of
line with the manifests until `himl apply --prune` archives it; apply without --prune reports
it and keeps it), 1 on errors.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from himl_manifest.cli.options import backend_options, format_option

if TYPE_CHECKING:
    from himl_manifest.backends.base import Backend
    from himl_manifest.plan.model import Plan

#: Exit code of ``--detailed-exitcode`` when the plan has changes (Terraform's).
EXIT_CHANGES = 2


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@format_option(
    "json",
    "markdown",
    help="text for people, json for tools (himl-plan/v1, see docs/plan.md), markdown for a PR.",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when the plan is clean, 2 when anything would change (orphaned runs count: "
    "they are archived only by `himl apply --prune`), 1 on errors.",
)
@click.option(
    "-o", "--out", type=click.Path(path_type=Path), help="Save the plan for `himl apply FILE`."
)
@click.option("--target", "targets", multiple=True, help="Plan only this experiment (repeatable).")
@click.option("--retry-failed", is_flag=True, help="Retry failed runs whatever their policy says.")
@click.option(
    "--replace",
    "replace_runs",
    multiple=True,
    metavar="RUN",
    help="Plan a new run for RUN (a run name, an experiment, or experiment:seed) even when it "
    "is in sync (repeatable).",
)
@backend_options
@click.option(
    "--color/--no-color", default=None, help="Colour the text output (default: on a TTY)."
)
def plan(
    paths: tuple[Path, ...],
    output_format: str,
    detailed_exitcode: bool,
    out: Path | None,
    targets: tuple[str, ...],
    retry_failed: bool,
    replace_runs: tuple[str, ...],
    backend_name: str,
    tracking_uri: str | None,
    color: bool | None,
) -> int:
    """Compare manifests (default: experiments/) with the runs that exist; print the actions."""
    from himl_manifest.operations.plan import load, plan_against
    from himl_manifest.plan.render import render

    desired = load(paths or (Path("experiments"),))  # an invalid manifest opens no store
    result = plan_against(
        desired,
        open_backend(backend_name, tracking_uri),
        retry_failed=retry_failed,
        targets=targets or None,
        replace_runs=replace_runs,
    )
    if out is not None:
        from himl_manifest.plan.serialize import plan_to_json

        _write_atomically(out, plan_to_json(result))
        click.echo(f"Saved the plan to {out}; run `himl apply {out}` to execute it.", err=True)
    use_color = sys.stdout.isatty() if color is None else color
    text = render(result, output_format, color=use_color and output_format == "text")
    click.echo(text, color=use_color)
    if not detailed_exitcode or not result.has_changes:
        return 0
    if only_orphans(result):
        click.echo(
            "Only orphaned runs differ: `himl apply --prune` archives them; until then the plan "
            f"is not clean (exit code {EXIT_CHANGES}).",
            err=True,
        )
    return EXIT_CHANGES


def only_orphans(result: Plan) -> bool:
    """True when the plan's only pending changes are orphans (apply without --prune keeps them)."""
    from himl_manifest.model import CHANGING, ActionKind

    kinds = {action.kind for action in result.actions}
    return ActionKind.ORPHAN in kinds and not kinds & CHANGING


def open_backend(name: str, tracking_uri: str | None) -> Backend:
    """The backend named on the command line (through the backend registry)."""
    from himl_manifest.backends.registry import open_backend as open_named

    return open_named(name, tracking_uri=tracking_uri)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
