"""`himl run SPEC_FILE`: the in-job entry point; runs one run spec written by apply.

It does what `himl-runner` does for the same settings: the spec becomes the same
:class:`~himl_manifest.runner.settings.RunSettings`, run by the same ``execute``.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command("run")
@click.argument("spec_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (default: outputs/<timestamp>_<run name>).",
)
@click.option("--tracking-uri", help="Run store URI (default: MLFLOW_TRACKING_URI or mlflow.db).")
def run(spec_file: Path, output_dir: Path | None, tracking_uri: str | None) -> int:
    """Execute one run spec (format himl-runspec/v1)."""
    from himl_manifest.errors import ConfigError
    from himl_manifest.runner.outputs import enter_launch_cwd, is_rank_zero
    from himl_manifest.spec import RunSpec

    enter_launch_cwd()
    try:
        text = spec_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read run spec {spec_file}: {exc}") from exc
    from himl_manifest.runner.execute import execute
    from himl_manifest.runner.settings import from_run_spec

    settings = from_run_spec(
        RunSpec.from_json(text), output_dir=output_dir, tracking_uri=tracking_uri
    )
    results = execute(settings)
    if is_rank_zero():
        for result in results:
            click.echo(f"run folder: {result.output_dir}")
            if result.run_id:
                click.echo(f"run id: {result.run_id}")
    return 0
