"""`himl report` and `himl compare`: seeds and folds as statistics, tables, plots and PR
comments. The callbacks parse and print; :mod:`himl_manifest.operations.report` decides.

Exit codes of `himl compare`: 0 compared (whatever the verdicts), 3 a ``--fail-if-worse`` gate
found B worse, 1 an error (a gate that could not be judged included), 64 a usage error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from himl_manifest.cli.options import backend_options, format_option

if TYPE_CHECKING:
    from himl_manifest.report.metrics import Directions
    from himl_manifest.spec import RunSpec

#: `himl compare`: a ``--fail-if-worse`` gate found B significantly worse.
EXIT_WORSE = 3
F = TypeVar("F", bound=Callable[..., object])


def shared_options(function: F) -> F:
    """``--manifests``, ``--minimize``, ``--maximize`` and the backend options."""
    for option in reversed(
        [
            click.option(
                "-m",
                "--manifests",
                "manifests",
                multiple=True,
                type=click.Path(path_type=Path),
                help="Manifest files or folders that say which runs are current "
                "(default: experiments/). Repeatable.",
            ),
            click.option(
                "--minimize",
                multiple=True,
                metavar="METRIC",
                help="Lower is better for METRIC (overrides the name rule). Repeatable.",
            ),
            click.option(
                "--maximize",
                multiple=True,
                metavar="METRIC",
                help="Higher is better for METRIC (overrides the name rule). Repeatable.",
            ),
            backend_options,
        ]
    ):
        function = option(function)
    return function


def _directions(minimize: Sequence[str], maximize: Sequence[str]) -> Directions:
    from himl_manifest.errors import UsageError
    from himl_manifest.report.metrics import Directions

    try:
        return Directions(frozenset(minimize), frozenset(maximize))
    except ValueError as exc:
        raise UsageError(f"--minimize/--maximize: {exc}") from None


def _desired(manifests: Sequence[Path]) -> Sequence[RunSpec] | None:
    """The manifests' run specs; None when none were named and experiments/ is absent."""
    if not manifests and not Path("experiments").exists():
        return None
    from himl_manifest.operations.plan import desired_runs

    return desired_runs(list(manifests) or ["experiments"])


@click.command()
@click.argument("experiments", nargs=-1)
@format_option(
    "json",
    "markdown",
    help="text for a terminal, json for tools (himl-report/v1), markdown for a PR comment.",
)
@click.option(
    "--plot",
    "plot_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Write a PNG per experiment and per-epoch metric, and report.html, into this folder.",
)
@shared_options
def report(
    experiments: tuple[str, ...],
    output_format: str,
    plot_dir: Path | None,
    manifests: tuple[Path, ...],
    minimize: tuple[str, ...],
    maximize: tuple[str, ...],
    backend_name: str,
    tracking_uri: str | None,
) -> int:
    """Statistics over seeds and folds of EXPERIMENTS (default: every experiment)."""
    from himl_manifest.backends.registry import open_backend
    from himl_manifest.operations.report import make_report
    from himl_manifest.report import render

    directions = _directions(minimize, maximize)
    desired = _desired(manifests)
    backend = open_backend(backend_name, tracking_uri=tracking_uri)
    result = make_report(backend, desired, experiments, directions)
    if plot_dir is not None:
        from himl_manifest.report.html import write_page
        from himl_manifest.report.plots import draw_experiment

        drawn = [d for e in result.experiments for d in draw_experiment(e, plot_dir)]
        page = write_page(result, drawn, plot_dir / "report.html")
        click.echo(f"wrote {len(drawn)} figure(s) and {page}", err=True)
    writer = {
        "json": render.report_json,
        "markdown": render.report_markdown,
        "text": render.report_text,
    }[output_format]
    click.echo(writer(result), nl=False)
    if result.incomplete and output_format != "text":
        click.echo("warning: incomplete results (see the report)", err=True)
    return 0


@click.command()
@click.argument("a")
@click.argument("b")
@format_option(
    "json",
    "markdown",
    help="text for a terminal, json for tools (himl-compare/v1), markdown for a PR comment.",
)
@click.option(
    "--alpha",
    type=float,
    default=0.05,
    show_default=True,
    help="Significance level; confidence intervals are at 1 - alpha.",
)
@click.option("--unpaired", is_flag=True, help="Welch's t-test even where seeds and folds pair up.")
@click.option(
    "--fail-if-worse",
    "gates",
    multiple=True,
    metavar="METRIC[:TOL]",
    help="Exit 3 when B is significantly worse on METRIC, beyond TOL (metric units, or N% of "
    "A's mean). Repeatable.",
)
@shared_options
def compare(
    a: str,
    b: str,
    output_format: str,
    alpha: float,
    unpaired: bool,
    gates: tuple[str, ...],
    manifests: tuple[Path, ...],
    minimize: tuple[str, ...],
    maximize: tuple[str, ...],
    backend_name: str,
    tracking_uri: str | None,
) -> int:
    """Compare experiment B with A: EXPERIMENT, or EXPERIMENT@REV (the manifests at a git
    revision), e.g. `himl compare hello-world@main hello-world`."""
    from himl_manifest.backends.registry import open_backend
    from himl_manifest.operations.report import Side, make_comparison
    from himl_manifest.report import render
    from himl_manifest.report.compare import Gate

    side_a, side_b = Side.parse(a), Side.parse(b)
    parsed = [Gate.parse(text) for text in gates]
    directions = _directions(minimize, maximize)
    desired = _desired(manifests)
    backend = open_backend(backend_name, tracking_uri=tracking_uri)
    result = make_comparison(
        backend,
        side_a,
        side_b,
        desired=desired,
        paths=[str(p) for p in manifests] or ["experiments"],
        directions=directions,
        alpha=alpha,
        paired=not unpaired,
        gates=parsed,
    )
    writer = {
        "json": render.compare_json,
        "markdown": render.compare_markdown,
        "text": render.compare_text,
    }[output_format]
    click.echo(writer(result), nl=False)
    if any(gate.failed for gate in result.gates):
        return EXIT_WORSE
    if any(gate.error for gate in result.gates):
        click.echo("error: a --fail-if-worse gate could not be judged (see above)", err=True)
        return 1
    return 0
