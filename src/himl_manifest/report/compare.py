"""B against A, metric by metric: the test, the verdict in words, and the regression gate.

Pairing: when both experiments have a value of a metric for at least two of the same (seed,
fold) units, the comparison is paired over those units (a run of B against the run of A with
the same seed and fold; values without a partner are left out and named); otherwise, or with
``paired=False``, it is Welch's t-test over all values.

The gate (``--fail-if-worse METRIC[:TOLERANCE]``) fails when B is worse *with confidence*: the
whole confidence interval of B - A lies beyond the tolerance on the worse side (with tolerance
0 this is exactly "p < alpha and B worse"). The tolerance is in the metric's units, or a
percentage of A's mean (``test_mse:5%``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from himl_manifest.diagnostics import did_you_mean
from himl_manifest.errors import UsageError
from himl_manifest.report.metrics import MINIMIZE, sort_key
from himl_manifest.report.model import ExperimentReport, Unit
from himl_manifest.report.stats import MIN_N, NO_TEST, PAIRED, TwoSample, compare_samples

#: Version of the JSON document of `himl compare`.
COMPARE_FORMAT = "himl-compare/v1"
DEFAULT_ALPHA = 0.05
BETTER = "better"
WORSE = "worse"
SAME = "no significant difference"
UNTESTED = "not tested"


def number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def plus_minus(value: float, half: float | None, *, signed: bool = False) -> str:
    """``0.0012 ± 0.0004``: both to the decimals of two significant digits of ``half`` (more
    when ``value`` would round to zero); ``signed``: ``+0.0012 ± 0.0004``."""
    sign = "+" if signed else ""
    if half is None or half <= 0 or not math.isfinite(half):
        return f"{value:{sign}.4g}"
    decimals = max(0, 1 - math.floor(math.log10(half)))
    if value and abs(value) < 10**-decimals:
        decimals = min(decimals + 6, max(decimals, 1 - math.floor(math.log10(abs(value)))))
    if decimals > 12:
        return f"{value:{sign}.3g} ± {half:.2g}"
    return f"{value:{sign}.{decimals}f} ± {half:.{decimals}f}"


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    direction: str  # min | max
    result: TwoSample
    units: list[Unit]  # paired: the units compared
    left_out: list[str]  # paired: units with a value on one side only
    alpha: float
    noun: str = "seeds"

    @property
    def significant(self) -> bool:
        return self.result.p is not None and self.result.p < self.alpha

    @property
    def outcome(self) -> str:
        """better / worse (B against A, significant), no significant difference, not tested."""
        if self.result.test == NO_TEST or self.result.p is None or self.result.diff is None:
            return UNTESTED
        if not self.significant or self.result.diff == 0:
            return SAME
        lower = self.result.diff < 0
        return BETTER if lower == (self.direction == MINIMIZE) else WORSE

    def warning(self) -> str | None:
        result = self.result
        pairs = result.test == PAIRED
        if result.test == NO_TEST:
            return (
                f"{self.metric}: cannot be tested with {result.n_a} vs {result.n_b} "
                f"{self.noun} (at least 2 per side; {MIN_N} to say anything)"
            )
        if result.too_small:
            counted = (
                f"{result.n_a} paired {self.noun}"
                if pairs
                else (f"{result.n_a} vs {result.n_b} {self.noun}")
            )
            return (
                f"{self.metric}: too few runs to say anything: {counted} (need at least "
                f"{MIN_N} {'pairs' if pairs else 'per side'})"
            )
        return None

    def verdict(self) -> str:
        """``B's test_mse is lower (better) by 0.0012 ± 0.0004, p = 0.03, 5 vs 5 seeds``."""
        result = self.result
        counted = f"{result.n_a} vs {result.n_b} {self.noun}"
        how = "paired" if result.test == PAIRED else "Welch"
        if self.outcome == UNTESTED or result.diff is None:
            why = "no variance" if result.test != NO_TEST else "too few runs"
            return f"{self.metric}: not tested ({why}), {counted}"
        half = result.half_width
        size = plus_minus(abs(result.diff), half)
        p = f"p = {result.p:.2g}"
        tail = f"{p}, {counted}, {how}"
        if self.left_out:
            tail += f"; left out, no partner: {', '.join(self.left_out)}"
        if self.outcome == SAME:
            signed = plus_minus(result.diff, half, signed=True)
            return f"no significant difference in {self.metric}: B - A = {signed}, {tail}"
        way = "lower" if result.diff < 0 else "higher"
        return f"B's {self.metric} is {way} ({self.outcome}) by {size}, {tail}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "direction": self.direction,
            **self.result.to_dict(),
            "paired_units": [unit.to_dict() for unit in self.units],
            "left_out": list(self.left_out),
            "significant": self.significant,
            "outcome": self.outcome,
            "verdict": self.verdict(),
            "warning": self.warning(),
        }


@dataclass(frozen=True)
class Gate:
    """``--fail-if-worse METRIC[:TOLERANCE]``: TOLERANCE in the metric's units, or ``N%`` of
    A's mean."""

    metric: str
    tolerance: float = 0.0
    relative: bool = False

    @classmethod
    def parse(cls, text: str) -> Gate:
        metric, sep, tail = text.rpartition(":")
        if not sep:
            return cls(text.strip())
        relative = tail.strip().endswith("%")
        try:
            tolerance = float(tail.strip().rstrip("%"))
        except ValueError:
            raise UsageError(
                f"--fail-if-worse {text!r}: the tolerance {tail!r} is not a number "
                "(METRIC, METRIC:0.001 or METRIC:5%)"
            ) from None
        if tolerance < 0 or not math.isfinite(tolerance) or not metric.strip():
            raise UsageError(f"--fail-if-worse {text!r}: expected METRIC[:TOLERANCE >= 0]")
        return cls(metric.strip(), tolerance / 100 if relative else tolerance, relative)

    def describe(self) -> str:
        if not self.tolerance:
            return self.metric
        shown = f"{self.tolerance * 100:g}%" if self.relative else f"{self.tolerance:g}"
        return f"{self.metric} (tolerance {shown})"


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    failed: bool  # B is worse beyond the tolerance, with confidence
    error: bool  # the gate could not be judged (no such metric, too few runs, no variance)
    message: str


@dataclass(frozen=True)
class Comparison:
    a: ExperimentReport
    b: ExperimentReport
    label_a: str
    label_b: str
    metrics: list[MetricComparison]
    alpha: float
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)

    def warnings(self) -> list[str]:
        out = []
        for side, report in (("A", self.a), ("B", self.b)):
            if report.incomplete:
                out.append(f"{side} ({report.name}) is incomplete: {report.status_line()}")
        out += [w for w in (m.warning() for m in self.metrics) if w]
        if self.only_a:
            out.append(f"only A has: {', '.join(self.only_a)}")
        if self.only_b:
            out.append(f"only B has: {', '.join(self.only_b)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": COMPARE_FORMAT,
            "a": {"label": self.label_a, **_side(self.a)},
            "b": {"label": self.label_b, **_side(self.b)},
            "alpha": self.alpha,
            "metrics": [m.to_dict() for m in self.metrics],
            "warnings": self.warnings(),
            "gates": [
                {
                    "metric": g.gate.metric,
                    "tolerance": g.gate.tolerance,
                    "relative": g.gate.relative,
                    "failed": g.failed,
                    "error": g.error,
                    "message": g.message,
                }
                for g in self.gates
            ],
        }


def _side(report: ExperimentReport) -> dict[str, Any]:
    return {
        "experiment": report.name,
        "source": report.source,
        "status": report.status_line(),
        "runs": [run.to_dict() for run in report.runs],
    }


def compare(
    a: ExperimentReport,
    b: ExperimentReport,
    *,
    label_a: str | None = None,
    label_b: str | None = None,
    alpha: float = DEFAULT_ALPHA,
    paired: bool = True,
    gates: Sequence[Gate] = (),
) -> Comparison:
    """Every final metric both experiments have, B against A; then the gates."""
    if not 0 < alpha < 1:
        raise UsageError(f"--alpha {alpha}: expected a number between 0 and 1")
    level = 1 - alpha
    names_a, names_b = set(a.summaries), set(b.summaries)
    noun = "runs" if a.has_folds or b.has_folds else "seeds"
    compared = []
    for metric in sorted(names_a & names_b, key=sort_key):
        values_a, values_b = a.values(metric), b.values(metric)
        values_a = {u: v for u, v in values_a.items() if math.isfinite(v)}
        values_b = {u: v for u, v in values_b.items() if math.isfinite(v)}
        shared = sorted(set(values_a) & set(values_b), key=Unit.sort_key)
        pairs = paired and len(shared) >= 2
        if pairs:
            left = sorted(set(values_a) ^ set(values_b), key=Unit.sort_key)
            side = {u: ("A" if u in values_a else "B") for u in left}
            result = compare_samples(
                [values_a[u] for u in shared],
                [values_b[u] for u in shared],
                paired=True,
                level=level,
            )
            left_out = [f"{side[u]} {u.label}" for u in left]
        else:
            order_a = sorted(values_a, key=Unit.sort_key)
            order_b = sorted(values_b, key=Unit.sort_key)
            result = compare_samples(
                [values_a[u] for u in order_a],
                [values_b[u] for u in order_b],
                paired=False,
                level=level,
            )
            shared, left_out = [], []
        direction = a.directions.get(metric) or b.directions[metric]
        compared.append(MetricComparison(metric, direction, result, shared, left_out, alpha, noun))
    comparison = Comparison(
        a,
        b,
        label_a or a.name,
        label_b or b.name,
        compared,
        alpha,
        only_a=sorted(names_a - names_b, key=sort_key),
        only_b=sorted(names_b - names_a, key=sort_key),
    )
    judged = [judge(comparison, gate) for gate in gates]
    return Comparison(**{**comparison.__dict__, "gates": judged})


def judge(comparison: Comparison, gate: Gate) -> GateResult:
    """Whether B is worse than A on ``gate.metric`` beyond the tolerance, with confidence."""
    found = {m.metric: m for m in comparison.metrics}
    item = found.get(gate.metric)
    if item is None:
        known = sorted(set(comparison.a.summaries) | set(comparison.b.summaries), key=sort_key)
        hint = did_you_mean(gate.metric, known)
        where = "either side" if gate.metric not in known else "one side only"
        message = (
            f"--fail-if-worse {gate.metric}: no such metric on {where}"
            + (f" ({hint})" if hint else "")
            + f"; metrics: {', '.join(known) or 'none'}"
        )
        return GateResult(gate, failed=False, error=True, message=message)
    result = item.result
    if result.ci_low is None or result.ci_high is None or result.mean_a is None:
        message = f"--fail-if-worse {gate.describe()}: cannot judge: {item.verdict()}"
        return GateResult(gate, failed=False, error=True, message=message)
    tolerance = gate.tolerance * abs(result.mean_a) if gate.relative else gate.tolerance
    minimize = item.direction == MINIMIZE
    worse = result.ci_low > tolerance if minimize else result.ci_high < -tolerance
    state = "FAILED" if worse else "passed"
    message = f"--fail-if-worse {gate.describe()}: {state}: {item.verdict()}"
    if worse and tolerance:
        message += f" (beyond the tolerance {tolerance:.4g})"
    return GateResult(gate, failed=worse, error=False, message=message)
