"""Summaries over seeds and folds, and two-sample comparisons, through scipy.stats.

- :func:`summarize`: n, mean, sample standard deviation (ddof=1), the Student-t confidence
  interval of the mean (95% by default), min and max. NaN values are counted apart and left out.
- :func:`compare_samples`: B against A: the difference of the means (B - A) with its confidence
  interval, the two-sided p-value and an effect size, by a paired t-test (``scipy.stats.
  ttest_rel``: the samples are aligned by seed and fold; effect size d_z, the mean difference
  over the standard deviation of the differences) or by Welch's t-test (``scipy.stats.
  ttest_ind(equal_var=False)``; effect size Cohen's d with the pooled standard deviation).

scipy is imported on first use (the ``report`` extra): ``himl --help`` never loads it.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from himl_manifest.extras import MissingExtra

#: The default confidence level of every interval.
LEVEL = 0.95
PAIRED = "paired"
WELCH = "welch"
#: No test possible (fewer than two values on a side).
NO_TEST = "none"
#: Below this many values per side (or pairs) a comparison says it is too small to trust.
MIN_N = 3


def scipy_stats() -> Any:
    """``scipy.stats``, or a clear error naming the extra that installs it."""
    try:
        import scipy.stats
    except ImportError:
        raise MissingExtra(
            "himl report and himl compare need scipy (and matplotlib for --plot): "
            "pip install 'himl-manifest[report]'"
        ) from None
    return scipy.stats


@lru_cache(maxsize=256)
def t_quantile(level: float, df: float) -> float:
    """The two-sided Student-t critical value for ``level`` with ``df`` degrees of freedom:
    ``scipy.stats.t.ppf((1 + level) / 2, df)``, computed by the function scipy.stats itself
    calls (``scipy.special.stdtrit``), because importing scipy.special costs a third of
    importing scipy.stats and a report needs nothing more."""
    try:
        from scipy.special import stdtrit
    except ImportError:
        scipy_stats()  # raises the error that names the extra
        raise
    return float(stdtrit(df, (1 + level) / 2))


@dataclass(frozen=True)
class Summary:
    """One final metric over the runs of an experiment."""

    n: int
    mean: float | None
    std: float | None  # sample standard deviation (ddof=1); None below two values
    ci: float | None  # half-width of the confidence interval of the mean; None below two
    min: float | None
    max: float | None
    nan: int = 0  # NaN values, left out of everything above
    level: float = LEVEL

    def to_dict(self) -> dict[str, Any]:
        low = high = None
        if self.mean is not None and self.ci is not None:
            low, high = self.mean - self.ci, self.mean + self.ci
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci_half_width": self.ci,
            "ci_low": low,
            "ci_high": high,
            "ci_level": self.level,
            "min": self.min,
            "max": self.max,
            "nan": self.nan,
        }


def summarize(values: Sequence[float], level: float = LEVEL) -> Summary:
    finite = [float(v) for v in values if math.isfinite(v)]
    nan = len(values) - len(finite)
    n = len(finite)
    if not n:
        return Summary(0, None, None, None, None, None, nan, level)
    mean = statistics.fmean(finite)
    if n < 2:
        return Summary(1, mean, None, None, finite[0], finite[0], nan, level)
    std = statistics.stdev(finite)
    ci = t_quantile(level, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, ci, min(finite), max(finite), nan, level)


@dataclass(frozen=True)
class TwoSample:
    """B against A for one metric."""

    test: str  # paired | welch | none
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    diff: float | None  # mean(B) - mean(A)
    ci_low: float | None
    ci_high: float | None
    p: float | None  # two-sided; None when it cannot be computed (too few values, no variance)
    effect: float | None  # d_z (paired) or Cohen's d (Welch)
    df: float | None
    level: float = LEVEL

    @property
    def effect_name(self) -> str:
        return "d_z" if self.test == PAIRED else "d"

    @property
    def half_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2

    @property
    def too_small(self) -> bool:
        return min(self.n_a, self.n_b) < MIN_N

    def to_dict(self) -> dict[str, Any]:
        return {
            "test": self.test,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
            "diff": self.diff,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "ci_level": self.level,
            "p": self.p,
            "effect_size": self.effect,
            "effect_size_kind": self.effect_name if self.test != NO_TEST else None,
            "df": self.df,
            "too_small": self.too_small,
        }


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def compare_samples(
    a: Sequence[float], b: Sequence[float], *, paired: bool, level: float = LEVEL
) -> TwoSample:
    """B against A: paired (``a[i]`` and ``b[i]`` are the same seed and fold) or Welch's."""
    mean_a = statistics.fmean(a) if a else None
    mean_b = statistics.fmean(b) if b else None
    diff = mean_b - mean_a if mean_a is not None and mean_b is not None else None
    if paired and len(a) != len(b):
        raise ValueError("a paired comparison needs as many values on each side")
    if min(len(a), len(b)) < 2:
        return TwoSample(
            NO_TEST, len(a), len(b), mean_a, mean_b, diff, None, None, None, None, None, level
        )
    stats = scipy_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # no variance: scipy says NaN
        if paired:
            result = stats.ttest_rel(b, a)
            differences = [y - x for x, y in zip(a, b, strict=True)]
            spread = statistics.stdev(differences)
            effect = statistics.fmean(differences) / spread if spread > 0 else None
        else:
            result = stats.ttest_ind(b, a, equal_var=False)
            pooled_var = (
                (len(a) - 1) * statistics.variance(a) + (len(b) - 1) * statistics.variance(b)
            ) / (len(a) + len(b) - 2)
            effect = diff / math.sqrt(pooled_var) if pooled_var > 0 and diff is not None else None
        interval = result.confidence_interval(confidence_level=level)
        low, high = _finite(interval.low), _finite(interval.high)
        p, df = _finite(result.pvalue), _finite(result.df)
    test = PAIRED if paired else WELCH
    return TwoSample(test, len(a), len(b), mean_a, mean_b, diff, low, high, p, effect, df, level)
