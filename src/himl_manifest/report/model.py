"""What a report holds: experiments, the runs that count for each (by seed and fold), the
summaries of their final metrics. Built from plain values by :func:`experiment_report`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from himl_manifest.model import IN_PROGRESS, RunRecord, RunStatus, _StrEnum
from himl_manifest.report.metrics import Directions, Points, epoch_series, final_metrics, sort_key
from himl_manifest.report.stats import LEVEL, Summary, summarize

#: Version of the JSON document of `himl report`.
REPORT_FORMAT = "himl-report/v1"


class Outcome(_StrEnum):
    """How one wanted run stands: only completed runs count in the statistics."""

    COMPLETED = "completed"
    RUNNING = "running"  # queued or running
    FAILED = "failed"  # failed or cancelled
    MISSING = "missing"  # the manifests ask for it; the store has no record of it


def outcome_of(record: RunRecord | None) -> Outcome:
    if record is None:
        return Outcome.MISSING
    if record.status == RunStatus.COMPLETED:
        return Outcome.COMPLETED
    if record.status in IN_PROGRESS:
        return Outcome.RUNNING
    return Outcome.FAILED


@dataclass(frozen=True, order=True)
class Unit:
    """What one run of an experiment repeats: its seed, and its cross-validation fold (None
    while the experiment has no folds)."""

    seed: int
    fold: int | None = None

    @property
    def label(self) -> str:
        return f"seed {self.seed}" + ("" if self.fold is None else f" fold {self.fold}")

    def to_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "fold": self.fold}

    def sort_key(self) -> tuple[int, int]:
        return (self.seed, -1 if self.fold is None else self.fold)


def fold_of(spec: Mapping[str, Any]) -> int | None:
    """The cross-validation fold of a run's spec: its top-level ``crossval_index`` (the
    reference's field name, written by expansion beside ``seed``); None without folds."""
    value = spec.get("crossval_index")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def unit_of(record: RunRecord) -> Unit:
    """A record's unit: its seed and the fold the store records with it (``himl.fold``),
    else the one its spec names."""
    fold = record.fold if record.fold is not None else fold_of(record.spec)
    return Unit(record.seed, fold)


@dataclass(frozen=True)
class Wanted:
    """A run an experiment is made of (a unit, its run name) and its newest record, if any."""

    unit: Unit
    run_name: str
    record: RunRecord | None


@dataclass(frozen=True)
class RunResult:
    """One run of a report: how it stands and, when it completed, what it logged."""

    unit: Unit
    run_name: str
    outcome: Outcome
    run_id: str | None = None
    attempt: int | None = None
    output_dir: str | None = None
    final: dict[str, float] = field(default_factory=dict)
    curves: dict[str, dict[int, float]] = field(default_factory=dict)
    error_tail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.unit.to_dict(),
            "run_name": self.run_name,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "outcome": self.outcome.value,
            "output_dir": self.output_dir,
            "final_metrics": dict(sorted(self.final.items())),
        }


@dataclass(frozen=True)
class ExperimentReport:
    """One experiment over its seeds and folds."""

    name: str
    #: Where its runs were chosen from: ``manifests``, ``manifests at <rev>``, or ``store``
    #: (no manifest asks for it: its latest active runs).
    source: str
    runs: list[RunResult]
    summaries: dict[str, Summary]
    directions: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def units(self, outcome: Outcome) -> list[Unit]:
        return [run.unit for run in self.runs if run.outcome == outcome]

    @property
    def completed(self) -> list[RunResult]:
        return [run for run in self.runs if run.outcome == Outcome.COMPLETED]

    @property
    def incomplete(self) -> bool:
        return any(run.outcome != Outcome.COMPLETED for run in self.runs) or not self.runs

    @property
    def has_folds(self) -> bool:
        return any(run.unit.fold is not None for run in self.runs)

    def values(self, metric: str) -> dict[Unit, float]:
        """The final metric ``metric`` of each completed run, by unit."""
        return {run.unit: run.final[metric] for run in self.completed if metric in run.final}

    def status_line(self) -> str:
        """``3 of 5 runs completed; seed 3 failed; seed 4 running`` (what is not complete)."""
        total = len(self.runs)
        parts = [f"{len(self.completed)} of {total} runs completed"]
        for outcome in (Outcome.FAILED, Outcome.RUNNING, Outcome.MISSING):
            units = self.units(outcome)
            if units:
                labels = ", ".join(unit.label for unit in units)
                parts.append(f"{labels} {outcome.value}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "complete": not self.incomplete,
            "status": self.status_line(),
            "completed": [u.to_dict() for u in self.units(Outcome.COMPLETED)],
            "failed": [u.to_dict() for u in self.units(Outcome.FAILED)],
            "running": [u.to_dict() for u in self.units(Outcome.RUNNING)],
            "missing": [u.to_dict() for u in self.units(Outcome.MISSING)],
            "runs": [run.to_dict() for run in self.runs],
            "metrics": {
                name: {"direction": self.directions[name], **summary.to_dict()}
                for name, summary in self.summaries.items()
            },
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class Report:
    experiments: list[ExperimentReport]
    warnings: list[str] = field(default_factory=list)

    @property
    def incomplete(self) -> bool:
        return any(experiment.incomplete for experiment in self.experiments)

    def incomplete_lines(self) -> list[str]:
        return [f"{e.name}: {e.status_line()}" for e in self.experiments if e.incomplete]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": REPORT_FORMAT,
            "complete": not self.incomplete,
            "incomplete": self.incomplete_lines(),
            "warnings": list(self.warnings),
            "experiments": [experiment.to_dict() for experiment in self.experiments],
        }


def experiment_report(
    name: str,
    source: str,
    wanted: Sequence[Wanted],
    histories: Mapping[str, Mapping[str, Points]],
    directions: Directions,
    *,
    level: float = LEVEL,
    notes: Sequence[str] = (),
) -> ExperimentReport:
    """The report of one experiment: its wanted runs, each as its record stands, and the
    summary of every final metric over the completed ones (``histories`` by run id)."""
    runs: list[RunResult] = []
    for item in sorted(wanted, key=lambda w: w.unit.sort_key()):
        record = item.record
        outcome = outcome_of(record)
        if record is None:
            runs.append(RunResult(item.unit, item.run_name, outcome))
            continue
        logged = histories.get(record.run_id, {}) if outcome == Outcome.COMPLETED else {}
        runs.append(
            RunResult(
                item.unit,
                item.run_name,
                outcome,
                run_id=record.run_id,
                attempt=record.attempt,
                output_dir=record.output_dir,
                final=final_metrics(logged, directions),
                curves=epoch_series(logged),
                error_tail=record.error_tail,
            )
        )
    names = sorted({metric for run in runs for metric in run.final}, key=sort_key)
    summaries = {
        metric: summarize([run.final[metric] for run in runs if metric in run.final], level)
        for metric in names
    }
    return ExperimentReport(
        name=name,
        source=source,
        runs=runs,
        summaries=summaries,
        directions={metric: directions.of(metric) for metric in names},
        notes=list(notes),
    )
