"""The one exception root of himl-manifest, and its families.

Every error the tool means to report derives from :class:`HimlError`; every entry point (`himl`
and `himl-runner`) maps each family to an exit code in one place, :func:`run_command`, and prints
a traceback only on request (``--traceback`` or ``HIML_TRACEBACK=1``).

- :class:`HimlError`: the root. Exit code 1.
  - :class:`ManifestError`: manifests that cannot be loaded or are invalid (carries diagnostics).
  - :class:`LookupFailed`: a container class that cannot be found, is ambiguous, or is not a
    container.
  - :class:`ConfigError`: bad runner flags, run specs or settings.
  - :class:`CheckpointError`: a checkpoint source that cannot be resolved, downloaded or used.
  - :class:`StoreError`: the run store is unreachable or corrupt.
  - :class:`StalePlanError`: a saved plan no longer matches the manifests or the runs.
  - :class:`BackendUnavailable`: a backend that is not installed or not implemented yet.
- :class:`UsageError`: a mistake on the command line. Exit code 64 (``EX_USAGE``), distinct from
  1 (error or invalid input) and 2 (changes pending, ``plan --detailed-exitcode``).
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # click is imported when a command runs, not with this module
    import click

#: Exit code of an interrupted command (Ctrl-C, or a declined prompt).
EXIT_INTERRUPTED = 130


class HimlError(Exception):
    """Root of every error himl-manifest reports to its user."""

    exit_code = 1


class ManifestError(HimlError):
    """Manifests could not be loaded or are invalid."""


class LookupFailed(HimlError):
    """A container class could not be found, is ambiguous, or is not a LightningContainer."""


class ConfigError(HimlError):
    """Invalid runner flags, run specs or settings."""


class ContainerError(HimlError):
    """User code (a container, its model or its data) raised an exception.

    Reported as the run's own error, naming the container (exit code 1), never as an internal
    error of the runner; the original exception is chained (``--traceback``) and, once a run
    folder exists, its traceback is in ``runner.log``.
    """

    def __init__(self, container: str, where: str, error: BaseException, note: str = "") -> None:
        message = f"{container}: {where} raised {type(error).__name__}: {error}"
        super().__init__(message + (f" ({note})" if note else ""))
        self.container = container


class CheckpointError(HimlError):
    """A checkpoint source could not be resolved, downloaded or used."""


class StoreError(HimlError):
    """The run store is unreachable, locked too long, or corrupt."""


class StalePlanError(HimlError):
    """A saved plan no longer matches the manifests or the runs it was made from."""


class BackendUnavailable(HimlError):
    """The requested backend is not installed or not available."""


class UsageError(HimlError):
    """A mistake on the command line."""

    exit_code = 64


def wants_traceback() -> bool:
    """True when the user asked for tracebacks (``--traceback`` or ``HIML_TRACEBACK=1``)."""
    return os.environ.get("HIML_TRACEBACK", "") not in ("", "0", "false", "False")


def run_command(
    command: click.Command, args: Sequence[str] | None = None, prog_name: str = "himl"
) -> int:
    """Run a click command; map every outcome to an exit code (every entry point uses this).

    0 success; 1 error or invalid input (:class:`HimlError`, or an internal error: its trace
    only on request); 64 usage error; 130 interrupted; a command's own int result otherwise.
    """
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
