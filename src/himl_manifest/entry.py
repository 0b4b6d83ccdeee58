"""The exit-code boundary of every entry point (`himl` and `himl-runner`): one function maps each
outcome of a command to an exit code and prints a traceback only on request.

Above the base layer (it imports click, lazily) and below every layer that has an entry point.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

from himl_manifest.errors import EXIT_INTERRUPTED, HimlError, UsageError

if TYPE_CHECKING:  # click is imported when a command runs, not with this module
    import click


#: Set (to anything but 0/false) for full tracebacks; ``himl --traceback`` sets it.
TRACEBACK_ENV = "HIML_TRACEBACK"


def wants_traceback() -> bool:
    """True when the user asked for tracebacks (``--traceback`` or ``HIML_TRACEBACK=1``)."""
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0", "false", "False")


def run_command(
    command: click.Command, args: Sequence[str] | None = None, prog_name: str = "himl"
) -> int:
    """Run a click command; map every outcome to an exit code (every entry point uses this).

    0 success; 1 error or invalid input (:class:`HimlError`, or an internal error: its trace
    only on request); 64 usage error; 130 interrupted; a command's own int result otherwise.
    ``--traceback`` holds for this command only: the process's environment is as it was after
    (a command run in process, by a test or a library, never leaks it to what runs next)."""
    before = os.environ.get(TRACEBACK_ENV)
    try:
        return _run(command, args, prog_name)
    finally:
        if before is None:
            os.environ.pop(TRACEBACK_ENV, None)
        else:
            os.environ[TRACEBACK_ENV] = before


def _run(command: click.Command, args: Sequence[str] | None, prog_name: str) -> int:
    import click

    try:
        result = command.main(
            args=list(args) if args is not None else None,
            prog_name=prog_name,
            standalone_mode=False,
        )
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.UsageError as exc:
        exc.show()
        return UsageError.exit_code
    except click.Abort:
        click.echo("Aborted.", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        return EXIT_INTERRUPTED
    except HimlError as exc:
        if wants_traceback():
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 1
    except Exception as exc:  # an internal error: say so, show the trace only on request
        if wants_traceback():
            traceback.print_exc()
        else:
            click.echo(
                f"internal error: {type(exc).__name__}: {exc}\n"
                "(run with --traceback or HIML_TRACEBACK=1 for details)",
                err=True,
            )
        return 1
    return int(result) if isinstance(result, int) else 0
