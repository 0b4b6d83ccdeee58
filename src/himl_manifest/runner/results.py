"""What a run starts from and what it produced: :class:`CheckpointChoice` and
:class:`RunResult`, shared by the run, its training loop and the seed sweep.

A module of its own, below both :mod:`himl_manifest.runner.execute` and
:mod:`himl_manifest.runner.seeds`, so neither has to import the other to name it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RunResult:
    """What one run produced."""

    output_dir: Path | None
    mode: str
    run_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    checkpoint: str | None = None
    seconds: float = 0.0
    ok: bool = True
    error: str = ""
    label: str = ""


#: How a run uses its checkpoint.
RESUME, WEIGHTS, EVALUATE = "resume", "weights", "evaluate"


@dataclass(frozen=True)
class CheckpointChoice:
    """The checkpoint a run starts from, and how it uses it."""

    path: Path | None = None
    use: str | None = None  # RESUME, WEIGHTS, EVALUATE, or None
    recovered: bool = False
    #: Whether the checkpoint may be unpickled in full (``weights_only=False``), which can run
    #: code: see :func:`himl_manifest.runner.checkpoints.is_trusted`.
    trusted: bool = False
    #: The store's id of the run whose checkpoint this is (a run reference), which a resumed
    #: run continues (``mlflow.parentRunId``).
    continues: str | None = None
