"""`himl logs RUN [--follow]`: a run's log (its newest attempt's), here or in Azure ML.

The log goes to stdout; where it comes from, and how the run ended, to stderr. Exit 0; with
``--follow``, 1 when the run ended failed or cancelled; 130 when interrupted (following stops,
the run goes on).
"""

from __future__ import annotations

import sys

import click

from himl_manifest.cli.options import backend_options
from himl_manifest.errors import EXIT_INTERRUPTED


@click.command()
@click.argument("run")
@click.option(
    "-f", "--follow", is_flag=True, help="Keep printing the log as it grows, until the run ends."
)
@backend_options
def logs(run: str, follow: bool, backend_name: str, tracking_uri: str | None) -> int:
    """Print the log of RUN (a run name or id): locally its runner.log, in Azure ML the job's."""
    from himl_manifest.backends.registry import open_backend
    from himl_manifest.model import UNSUCCESSFUL
    from himl_manifest.operations.logs import write_log

    backend = open_backend(backend_name, tracking_uri=tracking_uri)
    try:
        record = write_log(
            backend, run, sys.stdout, follow=follow, note=lambda text: click.echo(text, err=True)
        )
    except KeyboardInterrupt:
        click.echo("Stopped following: the run goes on.", err=True)
        return EXIT_INTERRUPTED
    if follow:
        click.echo(f"{record.run_name} attempt {record.attempt}: {record.status}", err=True)
        return 1 if record.status in UNSUCCESSFUL else 0
    return 0
