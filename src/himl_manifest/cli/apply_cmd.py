"""`himl apply`: carry out a plan (made now, or saved by `himl plan -o`), with live progress.

Everything apply prints goes to stderr (the plan, the question, progress, the summary): it has
no machine-readable output. Exit 0 when everything it started completed (or nothing changed),
1 on errors, refusals and failed runs, 130 when interrupted.

Runs executed here (local processes) are always waited for: they run only while apply waits.
Runs executed elsewhere (Azure ML) are accepted and go on without apply, which prints each one's
studio link; with ``--wait`` apply waits for them too, once the local runs have ended, with
live progress. Ctrl-C while it waits only for those stops the waiting, never the jobs.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

from himl_manifest.cli.options import backend_options
from himl_manifest.errors import EXIT_INTERRUPTED, HimlError

if TYPE_CHECKING:
    from himl_manifest.apply.execute import ApplyResult
    from himl_manifest.backends.base import Progress
    from himl_manifest.diagnostics import Diagnostic
    from himl_manifest.plan.model import Plan


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--target", "targets", multiple=True, help="Apply only this experiment (repeatable).")
@click.option("--prune", is_flag=True, help="Archive orphaned runs (never deletes them).")
@click.option("--retry-failed", is_flag=True, help="Retry failed runs whatever their policy says.")
@click.option(
    "--replace",
    "replace_runs",
    multiple=True,
    metavar="RUN",
    help="Force a new run for RUN (a run name, an experiment, or experiment:seed) even when it "
    "is in sync (repeatable).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(1, 256),
    default=2,
    show_default=True,
    help="Runs executed at once (local backend).",
)
@click.option("--allow-dirty", is_flag=True, help="Apply manifests with uncommitted changes.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option(
    "--wait",
    is_flag=True,
    help="Also wait for the runs executed elsewhere (Azure ML) to end, with progress; "
    "Ctrl-C stops waiting, not them.",
)
@backend_options
def apply(
    paths: tuple[Path, ...],
    targets: tuple[str, ...],
    prune: bool,
    retry_failed: bool,
    replace_runs: tuple[str, ...],
    jobs: int,
    allow_dirty: bool,
    yes: bool,
    wait: bool,
    backend_name: str,
    tracking_uri: str | None,
) -> int:
    """Submit, resume or retry what changed in PATHS (default: experiments/) or a PLANFILE."""
    from himl_manifest.backends.registry import open_backend
    from himl_manifest.operations.apply import ApplyRequest, run_session

    request = ApplyRequest(
        paths=paths,
        targets=targets,
        retry_failed=retry_failed,
        replace_runs=replace_runs,
        prune=prune,
        allow_dirty=allow_dirty,
        confirmed=yes,
        wait=wait,
    )
    result = run_session(
        request,
        lambda: open_backend(backend_name, tracking_uri=tracking_uri, jobs=jobs),
        ApplyPrinter(yes),
    )
    if result is None:
        return 0
    _report(result, wait)
    click.echo(result.summary_line(), err=True)
    if result.interrupted:
        return EXIT_INTERRUPTED
    return 0 if result.ok else 1


class ApplyPrinter:
    """The apply session's view: everything on stderr (apply has no machine-readable output)."""

    def __init__(self, yes: bool) -> None:
        self.yes = yes
        self.progress = ProgressPrinter()

    def plan(self, plan: Plan) -> None:
        from himl_manifest.plan.render import render_text

        tty = sys.stderr.isatty()
        click.echo(render_text(plan, color=tty), err=True, color=tty)

    def nothing_to_do(self, plan: Plan) -> None:
        if plan.has_changes:
            click.echo("Nothing to apply: orphans are archived only with --prune.", err=True)

    def problems(self, diagnostics: list[Diagnostic]) -> None:
        from himl_manifest.diagnostics import render_text

        click.echo(render_text(diagnostics, len({p.file for p in diagnostics})), err=True)

    def warning(self, text: str) -> None:
        click.echo(f"warning: {text}", err=True)

    def confirm(self) -> None:
        _confirm(self.yes)
        _stop_on_sigterm()

    def waiting_elsewhere(self, runs: list[str]) -> None:
        click.echo(
            f"Waiting for {len(runs)} run(s) executed elsewhere once accepted "
            "(Ctrl-C stops waiting, not the runs).",
            err=True,
        )


def _report(result: ApplyResult, wait: bool) -> None:
    """What the summary line only counts: each run not submitted and why, where each run that
    goes on elsewhere can be followed, and what Ctrl-C left going."""
    for conflict in result.conflicts:
        click.echo(f"conflict: {conflict}: not submitted", err=True)
    if result.stopped:
        click.echo(f"submitting stopped: {result.stopped}", err=True)
        for name in result.not_sent:
            click.echo(
                f"{name}: not sent (nothing of it exists; the next apply submits it)", err=True
            )
    for name, upstream in sorted(result.deferred.items()):
        click.echo(
            f"{name}: deferred: waits for {', '.join(upstream)} (submitted once it has "
            "completed: by the next apply, or by apply --wait)",
            err=True,
        )
    for name, why in sorted(result.blocked.items()):
        click.echo(f"{name}: blocked: {why}: not submitted", err=True)
    going = sorted(name for name in result.not_waited if name in result.outcomes)
    for name in going:
        click.echo(f"{name}: {result.links.get(name, 'submitted')}", err=True)
    if going and result.interrupted and wait:
        click.echo(
            f"Stopped waiting: the {len(going)} Azure ML job(s) go on, nothing was cancelled. "
            "`himl runs` shows how they stand, `himl logs RUN --follow` follows one.",
            err=True,
        )
    elif going:
        click.echo(
            f"{len(going)} run(s) go on in Azure ML: `himl runs` shows how they stand, "
            "`himl logs RUN --follow` follows one (or apply with --wait).",
            err=True,
        )


def _confirm(yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise HimlError(
            "refusing to apply without confirmation: stdin is not a terminal (pass --yes)"
        )
    if not click.confirm("Apply these changes?", default=False, err=True):
        raise HimlError("apply cancelled: nothing was changed")


def _stop_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled) stops the runs and ends their records, like Ctrl-C.

    The first SIGTERM or SIGINT interrupts; later ones (a CI runner signals again, Ctrl-C
    pressed twice) are ignored, so they cannot cut short the stopping of the runs and the ending
    of their records as cancelled."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)


class ProgressPrinter:
    """One line on stderr per state change of a run: ``12:00:01 running  <run>  pid 42``."""

    def __init__(self) -> None:
        self.last: dict[str, str] = {}

    def __call__(self, event: Progress) -> None:
        if self.last.get(event.run_name) == event.status and not event.message:
            return
        self.last[event.run_name] = event.status
        stamp = time.strftime("%H:%M:%S")
        detail = f"  {event.message}" if event.message else ""
        click.echo(f"{stamp} {event.status:<9} {event.run_name}{detail}", err=True)
