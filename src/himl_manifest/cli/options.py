"""Options shared by the commands that reach a run store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def format_option(*choices: str, help: str) -> Callable[[F], F]:
    """``--format`` (passed as ``output_format``), ``text`` by default, one of ``choices``."""
    option: Callable[[F], F] = click.option(
        "--format",
        "output_format",
        type=click.Choice(["text", *choices]),
        default="text",
        show_default=True,
        help=help,
    )
    return option


def backend_options(function: F) -> F:
    """``--backend`` and ``--tracking-uri``, passed as ``backend_name`` and ``tracking_uri``."""
    function = click.option("--tracking-uri", help="MLflow tracking URI of the local run store.")(
        function
    )
    from himl_manifest.backends.registry import HIDDEN_BACKENDS, backends

    function = click.option(
        "--backend",
        "backend_name",
        type=_Backends([*backends(), *HIDDEN_BACKENDS]),
        default="auto",
        show_default=True,
        help="Where runs are recorded and executed: auto (local, plus Azure ML when a workspace is "
        "configured; each run by its compute.target), local, or azureml.",
    )(function)
    return function


class _Backends(click.Choice):  # type: ignore[type-arg]
    """Accepts every registered backend, lists only those offered to users."""

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        from himl_manifest.backends.registry import backends

        return "[" + "|".join(backends()) + "]"
