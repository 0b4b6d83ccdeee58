"""`himl ui`: the MLflow UI on the project's run store, and the filter of its live runs."""

from __future__ import annotations

import click


@click.command("ui")
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port on 127.0.0.1 (default: a free one).",
)
@click.option("--tracking-uri", help="Run store URI (default: MLFLOW_TRACKING_URI or mlflow.db).")
def ui(port: int | None, tracking_uri: str | None) -> int:
    """Start the MLflow UI on the run store (Ctrl-C stops it); print its URL and the filter
    that shows the live runs only."""
    from himl_manifest.operations.runs import LIVE_RUNS_FILTER
    from himl_manifest.operations.ui import plan_ui, serve
    from himl_manifest.paths import project_root
    from himl_manifest.paths import tracking_uri as default_uri

    root = project_root()
    plan = plan_ui(default_uri(tracking_uri, root), root, port)
    if plan.elsewhere is not None:
        click.echo(f"The run store is served already: {plan.elsewhere}")
        click.echo(f"Live runs: {LIVE_RUNS_FILTER}")
        return 0

    def ready(url: str) -> None:
        click.echo(f"MLflow UI: {url}  (run store {plan.uri})")
        click.echo(f"Live runs: search {LIVE_RUNS_FILTER}")
        click.echo("Ctrl-C stops it.", err=True)

    return serve(plan, ready)
