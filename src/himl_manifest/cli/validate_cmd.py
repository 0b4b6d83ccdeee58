"""`himl validate` and `himl schema`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "github"]),
    default="text",
    show_default=True,
    help="text for people; json for tools (versioned, see docs/cli.md); github for Actions "
    "annotations.",
)
@click.option(
    "--check-imports", is_flag=True, help="Also import each container class (runs user code)."
)
def validate(paths: tuple[Path, ...], output_format: str, check_imports: bool) -> int:
    """Check manifests (default: experiments/). Exit 0 when all are valid, 1 when any is not."""
    from himl_manifest.diagnostics import RENDERERS
    from himl_manifest.operations.validate import validate as validate_manifests

    result = validate_manifests(paths, check_imports=check_imports)
    text = RENDERERS[output_format](result.diagnostics, len(result.files))
    if text:
        click.echo(text)
    return 0 if result.ok else 1


@click.command("schema")
def schema_cmd() -> int:
    """Print the manifest JSON Schema (draft 2020-12)."""
    from himl_manifest.manifest.schema import schema_text

    click.echo(schema_text(), nl=False)
    return 0
