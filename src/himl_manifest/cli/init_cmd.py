"""`himl init [DIR]`: scaffold a repository (manifest, schema, .gitignore, pre-commit, CI)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from himl_manifest.operations.init import InitResult


@click.command()
@click.argument(
    "directory", required=False, default=".", type=click.Path(file_okay=False, path_type=Path)
)
@click.option("--force", is_flag=True, help="Overwrite files that hold something else.")
@click.option(
    "--hook-repo",
    metavar="URL",
    help="The repository pre-commit fetches the himl-validate hook from (default: this "
    "installation's project URL).",
)
def init(directory: Path, force: bool, hook_repo: str | None) -> int:
    """Set up DIR (default: the current folder) for himl-manifest: an example manifest, the
    schema for editors, .gitignore entries, a pre-commit hook and a GitHub Actions workflow.

    Refuses to overwrite a file that holds something else (and then writes nothing) unless
    --force; running it again changes nothing."""
    from himl_manifest.operations.init import init as scaffold

    click.echo(report(scaffold(directory, force=force, repository=hook_repo)))
    return 0


def report(result: InitResult) -> str:
    """What was written, and what to do next."""
    from himl_manifest.operations.init import PLACEHOLDER_REPOSITORY

    lines = [f"{outcome.value:<11} {path}" for path, outcome in result.outcomes]
    if not result.changed:
        lines.append("Nothing to do: every file is already as himl init writes it.")
    if result.repository == PLACEHOLDER_REPOSITORY:
        lines.append(
            "note: .pre-commit-config.yaml names a placeholder repository; replace "
            f"{PLACEHOLDER_REPOSITORY} with himl-manifest's repository URL (or rerun with "
            "--hook-repo URL --force)."
        )
    steps = [] if result.root == Path.cwd().absolute() else [f"cd {result.root}"]
    if not any((folder / ".git").exists() for folder in (result.root, *result.root.parents)):
        steps.append("git init")
    lines += [
        "",
        "Next steps:",
        *(f"  {step}" for step in steps),
        "  himl validate            # check the manifests (the pre-commit hook does it too)",
        "  himl plan                # what apply would do: 2 runs of hello-world to create",
        '  git add -A && git commit -m "himl init"',
        "  himl apply --yes         # train them here, then `himl runs`",
        "The workflow (.github/workflows/himl.yml) plans pull requests and applies main; its "
        "secrets and variables: docs/gitops.md of himl-manifest.",
    ]
    return "\n".join(lines)
