"""Entry point of `himl`: the command group, and the one place errors become exit codes.

Exit codes (Terraform's, plus a distinct one for usage mistakes):
0 success / no changes; 1 error or invalid input; 2 changes pending (``plan
--detailed-exitcode``); 64 usage error (unknown option, bad argument); 130 interrupted.

Heavy modules are imported inside the commands that need them, so `himl --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from himl_manifest import __version__
from himl_manifest.entry import run_command
from himl_manifest.errors import UsageError

EXIT_USAGE = UsageError.exit_code

# Subcommands, imported on first use: name -> (module, attribute, one-line help).
_COMMANDS = {
    "init": (
        "himl_manifest.cli.init_cmd",
        "init",
        "Set up a repository: example manifest, schema, pre-commit hook, CI workflow.",
    ),
    "validate": (
        "himl_manifest.cli.validate_cmd",
        "validate",
        "Check manifests against the schema and the semantic rules.",
    ),
    "schema": ("himl_manifest.cli.validate_cmd", "schema_cmd", "Print the manifest JSON Schema."),
    "plan": (
        "himl_manifest.cli.plan_cmd",
        "plan",
        "Show what apply would change: manifests vs existing runs.",
    ),
    "apply": ("himl_manifest.cli.apply_cmd", "apply", "Submit, resume or retry only what changed."),
    "runs": ("himl_manifest.cli.runs_cmd", "runs", "List the runs this tool manages."),
    "audit": (
        "himl_manifest.cli.audit_cmd",
        "audit",
        "Which commit and manifest produced a run, and vice versa.",
    ),
    "logs": ("himl_manifest.cli.logs_cmd", "logs", "Print a run's log (--follow: as it grows)."),
    "report": (
        "himl_manifest.cli.report_cmd",
        "report",
        "Statistics over seeds and folds: tables, plots, HTML.",
    ),
    "compare": (
        "himl_manifest.cli.report_cmd",
        "compare",
        "Compare two experiments (or one at two commits); a regression gate.",
    ),
    "run": ("himl_manifest.cli.run_cmd", "run", "Execute one run spec (the in-job entry point)."),
    "ui": ("himl_manifest.cli.ui_cmd", "ui", "Start the MLflow UI on the run store."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported only when one is run (or its help shown)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        module_name, attribute, _ = _COMMANDS[cmd_name]
        import importlib

        command: click.Command = getattr(importlib.import_module(module_name), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, _COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="himl")
@click.option(
    "--traceback",
    "show_traceback",
    is_flag=True,
    envvar="HIML_TRACEBACK",
    help="Show the full traceback of errors (also: HIML_TRACEBACK=1).",
)
def cli(show_traceback: bool) -> None:
    """Declarative PyTorch Lightning experiments: validate, plan and apply manifests."""
    if show_traceback:
        os.environ["HIML_TRACEBACK"] = "1"


def run_cli(
    command: click.Command, args: Sequence[str] | None = None, prog_name: str = "himl"
) -> int:
    """Run a click command; map every outcome to an exit code (shared by every entry point)."""
    return run_command(command, args, prog_name)


def main(args: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(cli, args))


if __name__ == "__main__":
    main()
