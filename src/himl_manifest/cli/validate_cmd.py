"""`himl validate` and `himl schema`."""

from __future__ import annotations

from pathlib import Path

import click

from himl_manifest.cli.options import format_option


@click.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@format_option(
    "json",
    "github",
    help="text for people; json for tools (versioned, see docs/cli.md); github for Actions "
    "annotations.",
)
@click.option(
    "--check-imports", is_flag=True, help="Also import each container class (runs user code)."
)
@click.option(
    "--whole-folder",
    is_flag=True,
    help="Validate every manifest of the folder each file given belongs to, not only the "
    "files (the pre-commit hook: a change to one file can break another).",
)
def validate(
    paths: tuple[Path, ...], output_format: str, check_imports: bool, whole_folder: bool
) -> int:
    """Check manifests (default: experiments/). Exit 0 when all are valid, 1 when any is not.

    A file is checked with the manifests of its folder: references to other experiments
    resolve against them."""
    from himl_manifest.diagnostics import RENDERERS
    from himl_manifest.operations.validate import validate as validate_manifests

    result = validate_manifests(paths, check_imports=check_imports, whole_folder=whole_folder)
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
