"""Per-epoch figures: each run a thin line, the mean over runs with a ±1 standard deviation band.

matplotlib is imported on first use, through its object-oriented API on the Agg canvas (no
pyplot, no display, no global state). Each PNG carries its own description in its metadata
(``Description``: the experiment, the metric, the number of runs and of lines drawn), so a test
or a tool can check a figure without looking at it.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himl_manifest.extras import MissingExtra
from himl_manifest.report.model import ExperimentReport, RunResult

#: Figure size in inches, and resolution: 1050 x 630 pixels.
SIZE = (7.0, 4.2)
DPI = 150


@dataclass(frozen=True)
class Drawn:
    """One written figure."""

    experiment: str
    metric: str
    path: Path
    runs: int
    lines: int  # Line2D objects drawn (runs + the mean)


def _matplotlib() -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingExtra("--plot needs matplotlib: pip install 'himl-manifest[report]'") from None
    return Figure


def safe_name(text: str) -> str:
    """A file name for a metric or an experiment (``train/loss`` -> ``train_loss``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "metric"


def curve_metrics(experiment: ExperimentReport) -> list[str]:
    """The metrics with a per-epoch curve in some completed run, by name."""
    return sorted({metric for run in experiment.completed for metric in run.curves})


def mean_band(runs: Sequence[RunResult], metric: str) -> tuple[list[int], list[float], list[float]]:
    """Epochs, the mean over the runs that logged each, and the sample standard deviation (0
    where one run logged it); NaN values left out."""
    by_epoch: dict[int, list[float]] = {}
    for run in runs:
        for epoch, value in run.curves.get(metric, {}).items():
            if math.isfinite(value):
                by_epoch.setdefault(epoch, []).append(value)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[e]) for e in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return epochs, means, stds


def figure(experiment: ExperimentReport, metric: str) -> Any:
    """The figure of one metric of one experiment (a matplotlib ``Figure``, not saved)."""
    from matplotlib.ticker import MaxNLocator

    figure_class = _matplotlib()
    fig = figure_class(figsize=SIZE, dpi=DPI, layout="constrained")
    axes = fig.add_subplot()
    runs = [run for run in experiment.completed if run.curves.get(metric)]
    few = max((len(run.curves[metric]) for run in runs), default=0) <= 15
    for index, run in enumerate(runs):
        points = sorted(run.curves[metric].items())
        axes.plot(
            [e for e, _ in points],
            [v for _, v in points],
            color=f"C{index % 10}",
            linewidth=0.9,
            alpha=0.75,
            marker="o" if few else None,
            markersize=2.5,
            label=run.unit.label,
        )
    epochs, means, stds = mean_band(runs, metric)
    if epochs:
        low = [m - s for m, s in zip(means, stds, strict=True)]
        high = [m + s for m, s in zip(means, stds, strict=True)]
        axes.fill_between(epochs, low, high, color="black", alpha=0.12, linewidth=0, label="±1 std")
        axes.plot(epochs, means, color="black", linewidth=2.2, label=f"mean of {len(runs)} runs")
    axes.set_title(f"{experiment.name}: {metric}")
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small", ncols=2 if len(runs) > 6 else 1, loc="best", frameon=False)
    return fig


def line_count(fig: Any) -> int:
    return sum(len(axes.get_lines()) for axes in fig.axes)


def save(fig: Any, path: Path, description: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Title": str(description.get("title", "")), "Description": json.dumps(description)}
    fig.savefig(path, format="png", metadata=metadata)


def draw_experiment(experiment: ExperimentReport, folder: Path) -> list[Drawn]:
    """Write ``<folder>/<experiment>/<metric>.png`` for every per-epoch metric."""
    drawn = []
    for metric in curve_metrics(experiment):
        fig = figure(experiment, metric)
        runs = sum(1 for run in experiment.completed if run.curves.get(metric))
        lines = line_count(fig)
        path = folder / safe_name(experiment.name) / f"{safe_name(metric)}.png"
        description = {
            "title": f"{experiment.name}: {metric}",
            "experiment": experiment.name,
            "metric": metric,
            "runs": runs,
            "lines": lines,
        }
        save(fig, path, description)
        drawn.append(Drawn(experiment.name, metric, path, runs, lines))
    return drawn
