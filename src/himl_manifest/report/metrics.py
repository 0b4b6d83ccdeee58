"""Final metrics of one run, which way each metric is better, and the per-epoch curves.

A run's logged metrics (``{metric: [(step, value), ...]}``) give its **final metrics**:

- a metric whose name starts with ``test`` (``test_mse``, ``test/acc``): its last value, under
  its own name;
- every other metric (``loss``, ``val_loss``, ``val_acc``...): ``<metric>.last``, its value at
  the last step, and ``<metric>.best``, its best value over the run (the minimum or the
  maximum, by :func:`direction`).

Lightning's ``epoch`` metric is bookkeeping, not a result: it is no final metric, but it maps
each step to its epoch for the per-epoch curves (:func:`epoch_series`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

#: Lightning's step -> epoch bookkeeping metric.
EPOCH_METRIC = "epoch"
LAST = "last"
BEST = "best"
MINIMIZE = "min"
MAXIMIZE = "max"

#: Metric names where lower is better (matched against the last ``/``-separated part of the
#: name, case-insensitively, anywhere in it): losses, errors, distances, times.
_LOWER_IS_BETTER = re.compile(
    r"loss|mse|mae|rmse|mape|error|err\b|nll|perplexity|ppl|wer|cer|fpr|fnr|distance|"
    r"hausdorff|time|latency|duration|regret|divergence|kl\b",
    re.IGNORECASE,
)
Points = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class Directions:
    """Which way each metric is better: by name (:data:`_LOWER_IS_BETTER`: lower; otherwise
    higher), unless ``minimize`` or ``maximize`` names it (``--minimize`` / ``--maximize``)."""

    minimize: frozenset[str] = field(default_factory=frozenset)
    maximize: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        both = sorted(self.minimize & self.maximize)
        if both:
            raise ValueError(f"metric {both[0]!r} cannot be both minimized and maximized")

    def of(self, metric: str) -> str:
        """``min`` or ``max`` for a logged metric or a final metric (``val_loss.best``)."""
        base = base_metric(metric)
        if base in self.minimize:
            return MINIMIZE
        if base in self.maximize:
            return MAXIMIZE
        tail = base.rsplit("/", 1)[-1]
        return MINIMIZE if _LOWER_IS_BETTER.search(tail) else MAXIMIZE


def base_metric(final: str) -> str:
    """The logged metric a final metric comes from (``val_loss.best`` -> ``val_loss``)."""
    for suffix in (f".{LAST}", f".{BEST}"):
        if final.endswith(suffix):
            return final[: -len(suffix)]
    return final


def is_test_metric(metric: str) -> bool:
    return metric.lower().startswith("test")


def final_metrics(histories: Mapping[str, Points], directions: Directions) -> dict[str, float]:
    """The final metrics of one run (see the module's docstring); NaN values are skipped for
    ``best``, kept for ``last`` (a run that ended in NaN says so)."""
    out: dict[str, float] = {}
    for metric, points in histories.items():
        if metric == EPOCH_METRIC or not points:
            continue
        last = points[-1][1]
        if is_test_metric(metric):
            out[metric] = last
            continue
        out[f"{metric}.{LAST}"] = last
        finite = [value for _, value in points if math.isfinite(value)]
        if finite:
            pick = min if directions.of(metric) == MINIMIZE else max
            out[f"{metric}.{BEST}"] = pick(finite)
        else:
            out[f"{metric}.{BEST}"] = math.nan
    return out


def epoch_series(histories: Mapping[str, Points]) -> dict[str, dict[int, float]]:
    """The per-epoch curve of every metric that is not a test metric: ``{metric: {epoch:
    value}}``. A value's epoch is the ``epoch`` metric logged at the same step (Lightning logs
    it beside every metric); without one, the step itself. Several values in one epoch (metrics
    logged per step): the last."""
    epochs = {step: int(value) for step, value in histories.get(EPOCH_METRIC, ())}
    out: dict[str, dict[int, float]] = {}
    for metric, points in histories.items():
        if metric == EPOCH_METRIC or is_test_metric(metric) or not points:
            continue
        curve: dict[int, float] = {}
        for step, value in points:
            curve[epochs.get(step, step)] = value
        out[metric] = curve
    return out


def sort_key(final: str) -> tuple[int, str]:
    """Report order: test metrics, then validation metrics, then the rest; by name."""
    lowered = final.lower()
    if lowered.startswith("test"):
        return (0, lowered)
    if lowered.startswith("val"):
        return (1, lowered)
    return (2, lowered)
