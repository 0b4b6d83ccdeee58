"""Seeds and folds as statistics: the pure core of ``himl report`` and ``himl compare``.

- :mod:`.metrics`: which final metrics a run has (test metrics; the best and last value of every
  other logged metric), which way is better, and the per-epoch curves;
- :mod:`.stats`: summaries (mean, sample standard deviation, Student-t confidence interval,
  min, max, n) and two-sample comparisons (paired or Welch's t-test, effect size), through
  scipy.stats, imported when first used;
- :mod:`.model`: the report's values (experiments, their runs, units, summaries);
- :mod:`.compare`: two experiments' metrics compared, verdicts in words, the regression gate;
- :mod:`.render`: text, Markdown and JSON of reports and comparisons;
- :mod:`.plots` / :mod:`.html`: PNG figures (matplotlib, imported when first used) and one
  self-contained HTML page.

No run store, no git, no clock: :mod:`himl_manifest.operations.report` reads those and hands
plain values here. Docs: ``docs/report.md``.
"""
