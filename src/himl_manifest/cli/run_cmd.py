"""`himl run SPEC_FILE` / `himl run --spec-env NAME`: the in-job entry point; runs one run spec
written by apply.

It does what `himl-runner` does for the same settings: the spec becomes the same
:class:`~himl_manifest.runner.settings.RunSettings`, run by the same ``execute``. An Azure ML
job carries its spec in an environment variable (``--spec-env HIML_RUN_SPEC``) and passes its
inputs as ``--input NAME=PATH``: ``dataset_<i>`` (where the service put the ``i``-th Azure
dataset) and ``checkpoint`` (the checkpoint file the run starts or resumes from).
"""

from __future__ import annotations

import os
from pathlib import Path

import click


@click.command("run")
@click.argument("spec_file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--spec-env",
    metavar="NAME",
    help="Read the run spec JSON from this environment variable (an Azure ML job's "
    "HIML_RUN_SPEC) instead of SPEC_FILE.",
)
@click.option(
    "--input",
    "inputs",
    multiple=True,
    metavar="NAME=PATH",
    help="Where a job input is on this machine: dataset_<i> (the i-th Azure dataset's folder) "
    "or checkpoint (the checkpoint file). Repeatable.",
)
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder (default: outputs/<timestamp>_<run name>).",
)
@click.option("--tracking-uri", help="Run store URI (default: MLFLOW_TRACKING_URI or mlflow.db).")
def run(
    spec_file: Path | None,
    spec_env: str | None,
    inputs: tuple[str, ...],
    output_dir: Path | None,
    tracking_uri: str | None,
) -> int:
    """Execute one run spec (format himl-runspec/v1), from SPEC_FILE or --spec-env."""
    from himl_manifest.errors import ConfigError
    from himl_manifest.runner.outputs import enter_launch_cwd, is_rank_zero
    from himl_manifest.spec import RunSpec

    if spec_file is not None and spec_env is not None:
        raise click.UsageError("give the run spec as SPEC_FILE or --spec-env NAME, not both")
    if spec_file is None and spec_env is None:
        raise click.UsageError("no run spec: give SPEC_FILE or --spec-env NAME")
    from himl_manifest.extras import require_train

    require_train()
    enter_launch_cwd()
    if spec_env is not None:
        text = os.environ.get(spec_env)
        if text is None or not text.strip():
            raise click.UsageError(f"--spec-env {spec_env}: the environment variable is not set")
    else:
        assert spec_file is not None
        try:
            text = spec_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read run spec {spec_file}: {exc}") from exc
    from himl_manifest.runner.execute import execute
    from himl_manifest.runner.settings import from_run_spec, parse_inputs

    spec = RunSpec.from_json(text)
    settings = from_run_spec(
        spec,
        output_dir=output_dir,
        tracking_uri=tracking_uri,
        inputs=parse_inputs(inputs, spec.spec),
    )
    results = execute(settings)
    if is_rank_zero():
        for result in results:
            click.echo(f"run folder: {result.output_dir}")
            if result.run_id:
                click.echo(f"run id: {result.run_id}")
    return 0
