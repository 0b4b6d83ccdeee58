"""The one exception root of himl-manifest, and its families.

Every error the tool means to report derives from :class:`HimlError`; every entry point (`himl`
and `himl-runner`) maps each family to an exit code in one place,
:func:`himl_manifest.entry.run_command`, and prints a traceback only on request
(``--traceback`` or ``HIML_TRACEBACK=1``).

- :class:`HimlError`: the root. Exit code 1.
  - :class:`ManifestError`: manifests that cannot be loaded or are invalid (carries diagnostics).
  - :class:`LookupFailed`: a container class that cannot be found, is ambiguous, or is not a
    container.
  - :class:`ConfigError`: bad runner flags, run specs or settings.
  - :class:`ContainerError`: a user's container raised in ``__init__``, a setter or a hook.
  - :class:`CheckpointError`: a checkpoint source that cannot be resolved, downloaded or used.
  - :class:`StoreError`: the run store is unreachable or corrupt.
  - :class:`StalePlanError`: a saved plan no longer matches the manifests or the runs.
  - :class:`BackendUnavailable`: a backend that is not installed or not implemented yet.
- :class:`UsageError`: a mistake on the command line. Exit code 64 (``EX_USAGE``), distinct from
  1 (error or invalid input) and 2 (changes pending, ``plan --detailed-exitcode``).
"""

from __future__ import annotations

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
