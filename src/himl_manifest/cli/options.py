"""Options shared by the commands that reach a run store."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def backend_options(function: F) -> F:
    """``--backend`` and ``--tracking-uri``, passed as ``backend_name`` and ``tracking_uri``."""
    function = click.option("--tracking-uri", help="MLflow tracking URI of the local run store.")(
        function
    )
    function = click.option(
        "--backend",
        "backend_name",
        type=click.Choice(["local", "memory", "azureml"]),
        default="local",
        show_default=True,
        help="Where the runs are recorded (and, for apply, executed).",
    )(function)
    return function
