"""The report's core on the in-memory run store: which runs count, folds beside seeds, the
statistics and the tests against scipy, the gate's rules, and `NAME@REV` in a real git
repository. Fast: no training."""

from __future__ import annotations

import math
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from report_helpers import commit, init_repo, manifest

from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.errors import UsageError
from himl_manifest.model import Lifecycle, RunStatus
from himl_manifest.operations.plan import desired_runs
from himl_manifest.operations.report import Side, desired_at, make_comparison, make_report
from himl_manifest.report.compare import Gate, compare, plus_minus
from himl_manifest.report.metrics import Directions, epoch_series, final_metrics
from himl_manifest.report.model import Unit
from himl_manifest.report.stats import summarize
from himl_manifest.spec import RunSpec


def hello_repo(root: Path, seeds: int = 3, **fields: object) -> list[RunSpec]:
    init_repo(root)
    (root / "experiments" / "hello.yaml").write_text(
        manifest("hello", seeds=seeds, **fields), encoding="utf-8"
    )
    commit(root, "hello")
    return desired_runs([root / "experiments"])


def applied(
    runs: list[RunSpec], test_mse: dict[int, float], **outcomes: RunStatus
) -> MemoryBackend:
    """A memory store where ``runs`` ran; each completed one logged 3 epochs and a test_mse."""
    store = MemoryBackend()
    for name, status in outcomes.items():
        store.set_outcome(name, status)
    store.submit(runs)
    store.wait([run.run_name for run in runs])
    for record in store.records():
        if record.status == RunStatus.COMPLETED and record.seed in test_mse:
            base = test_mse[record.seed]
            store.log_history(
                record.run_id, "val_loss", [(3, base * 3), (7, base * 2), (11, base * 2.5)]
            )
            store.log_history(record.run_id, "epoch", [(3, 0), (7, 1), (11, 2), (12, 3)])
            store.log_history(record.run_id, "test_mse", [(12, base)])
    return store


def test_final_metrics_best_and_last_by_direction() -> None:
    histories = {
        "val_loss": [(1, 0.5), (2, 0.2), (3, 0.3)],
        "val_acc": [(1, 0.5), (2, 0.9), (3, 0.7)],
        "test_auc": [(4, 0.8)],
        "epoch": [(1, 0.0), (2, 1.0), (3, 2.0), (4, 3.0)],
    }
    finals = final_metrics(histories, Directions())
    assert finals == {
        "val_loss.last": 0.3,
        "val_loss.best": 0.2,
        "val_acc.last": 0.7,
        "val_acc.best": 0.9,
        "test_auc": 0.8,
    }
    flipped = final_metrics(histories, Directions(maximize=frozenset({"val_loss"})))
    assert flipped["val_loss.best"] == 0.5
    assert epoch_series(histories) == {
        "val_loss": {0: 0.5, 1: 0.2, 2: 0.3},
        "val_acc": {0: 0.5, 1: 0.9, 2: 0.7},
    }
    with pytest.raises(ValueError, match="both minimized and maximized"):
        Directions(frozenset({"x"}), frozenset({"x"}))


def test_summary_matches_numpy_and_scipy() -> None:
    values = [0.11, 0.13, 0.12, 0.19, math.nan]
    summary = summarize(values)
    finite = np.array(values[:4])
    assert (summary.n, summary.nan) == (4, 1)
    assert summary.mean == pytest.approx(finite.mean())
    assert summary.std == pytest.approx(finite.std(ddof=1))
    low, _ = scipy.stats.t.interval(0.95, 3, loc=finite.mean(), scale=scipy.stats.sem(finite))
    assert summary.ci == pytest.approx(finite.mean() - low)
    single = summarize([0.5])
    assert (single.n, single.mean, single.std, single.ci) == (1, 0.5, None, None)


def test_report_on_memory_store_counts_completed_runs_only(tmp_path: Path) -> None:
    runs = hello_repo(tmp_path / "repo", seeds=4)
    failing = next(r.run_name for r in runs if r.seed == 1)
    store = applied(runs[:3], {0: 0.1, 2: 0.3}, **{failing: RunStatus.FAILED})
    report = make_report(store, runs)
    (experiment,) = report.experiments
    assert report.incomplete
    assert experiment.status_line() == "2 of 4 runs completed; seed 1 failed; seed 3 missing"
    assert experiment.summaries["test_mse"].n == 2
    assert experiment.summaries["test_mse"].mean == pytest.approx(0.2)
    assert experiment.summaries["val_loss.best"].mean == pytest.approx(0.4)  # 2 x (0.1, 0.3)
    assert experiment.summaries["val_loss.last"].mean == pytest.approx(0.5)
    before = store.queries
    make_report(store, runs)
    assert store.queries - before == 2  # one list_runs, one metric_histories


def test_superseded_runs_never_count_and_store_only_experiments(tmp_path: Path) -> None:
    runs = hello_repo(tmp_path / "repo")
    store = applied(runs, {0: 0.1, 1: 0.2, 2: 0.3})
    old = replace(
        store.records()[0], run_name="hello-s0-00000000", run_id="old", state=Lifecycle.SUPERSEDED
    )
    store.add(old)
    store.log_history("old", "test_mse", [(1, 99.0)])
    (experiment,) = make_report(store, runs).experiments
    assert experiment.summaries["test_mse"].max == pytest.approx(0.3)
    # without manifests: the latest active runs in the store, said so
    report = make_report(store, None)
    (stored,) = report.experiments
    assert stored.source == "store" and stored.notes
    assert report.warnings and "no manifests read" in report.warnings[0]
    assert stored.summaries["test_mse"].n == 3
    with pytest.raises(UsageError, match="did you mean 'hello'"):
        make_report(store, runs, ["helo"])


def test_folds_are_units_beside_seeds(tmp_path: Path) -> None:
    """Runs that carry a fold (``crossval_index``) are paired by (seed, fold)."""
    runs = hello_repo(tmp_path / "repo", seeds=2)
    folded = [
        replace(run, run_name=f"{run.run_name}-f{fold}", spec={**run.spec, "crossval_index": fold})
        for run in runs
        for fold in (0, 1)
    ]
    store = MemoryBackend()
    store.submit(folded)
    store.wait([run.run_name for run in folded])
    value = {record.run_name: 0.1 + 0.01 * i for i, record in enumerate(store.records())}
    for record in store.records():
        store.log_history(record.run_id, "test_mse", [(1, value[record.run_name])])
    (experiment,) = make_report(store, folded).experiments
    assert [run.unit for run in experiment.runs] == [Unit(0, 0), Unit(0, 1), Unit(1, 0), Unit(1, 1)]
    assert experiment.summaries["test_mse"].n == 4
    result = compare(experiment, experiment)
    (item,) = result.metrics
    assert item.result.test == "paired" and len(item.units) == 4
    assert item.noun == "runs"


def test_welch_when_seeds_do_not_pair_and_warnings_when_too_few(tmp_path: Path) -> None:
    runs = hello_repo(tmp_path / "a", seeds=3)
    other = [
        replace(run, experiment="other", run_name=f"other-s{run.seed + 10}", seed=run.seed + 10)
        for run in runs
    ]
    store = applied(runs + other, {0: 0.1, 1: 0.12, 2: 0.11, 10: 0.2, 11: 0.22, 12: 0.25})
    reports = make_report(store, runs + other).experiments
    hello, rival = (
        (r for r in reports if r.name == "hello"),
        (r for r in reports if r.name == "other"),
    )
    a, b = next(hello), next(rival)
    result = compare(a, b)
    item = next(m for m in result.metrics if m.metric == "test_mse")
    want = scipy.stats.ttest_ind([0.2, 0.22, 0.25], [0.1, 0.12, 0.11], equal_var=False)
    assert item.result.test == "welch"
    assert item.result.p == pytest.approx(want.pvalue)
    assert item.outcome == "worse"
    assert item.verdict().startswith("B's test_mse is higher (worse) by 0.")
    assert "3 vs 3 seeds, Welch" in item.verdict()
    small = applied(runs[:2] + other[:2], {0: 0.1, 1: 0.12, 10: 0.2, 11: 0.22})
    a2, b2 = sorted(make_report(small, runs[:2] + other[:2]).experiments, key=lambda e: e.name)
    warned = compare(a2, b2).warnings()
    assert any("too few runs to say anything: 2 vs 2 seeds" in w for w in warned)


def test_gates() -> None:
    assert Gate.parse("test_mse") == Gate("test_mse")
    assert Gate.parse("test_mse:0.01") == Gate("test_mse", 0.01)
    assert Gate.parse("val/acc:5%") == Gate("val/acc", 0.05, relative=True)
    for bad in ("test_mse:x", "test_mse:-1", ":1"):
        with pytest.raises(UsageError):
            Gate.parse(bad)
    assert plus_minus(0.00123, 0.00041) == "0.00123 ± 0.00041"
    assert plus_minus(-0.004, 0.14, signed=True) == "-0.0040 ± 0.1400"


def test_compare_at_git_revisions(tmp_path: Path) -> None:
    """`hello@HEAD~1` plans the manifests of that commit in a temporary worktree: its run
    names, from the same store; the worktree is gone afterwards."""
    root = tmp_path / "repo"
    old_runs = hello_repo(root, seeds=3)
    (root / "experiments" / "hello.yaml").write_text(
        manifest("hello", seeds=3, params={"learning_rate": 0.05}), encoding="utf-8"
    )
    commit(root, "lower learning rate")
    new_runs = desired_runs([root / "experiments"])
    assert {r.run_name for r in old_runs}.isdisjoint({r.run_name for r in new_runs})
    assert [r.run_name for r in desired_at("HEAD~1", ["experiments"], root)] == [
        r.run_name for r in old_runs
    ]
    store = applied(old_runs + new_runs, {0: 0.1, 1: 0.12, 2: 0.11})
    for record in store.records():
        if record.run_name in {r.run_name for r in new_runs}:
            store.log_history(record.run_id, "test_mse", [(13, 0.2 + record.seed / 100)])
    result = make_comparison(
        store, Side.parse("hello@HEAD~1"), Side.parse("hello"), desired=new_runs, root=root
    )
    assert [run.run_name for run in result.a.runs] == [r.run_name for r in old_runs]
    assert [run.run_name for run in result.b.runs] == [r.run_name for r in new_runs]
    assert result.label_a == "hello@HEAD~1" and result.a.source == "manifests at HEAD~1"
    item = next(m for m in result.metrics if m.metric == "test_mse")
    assert item.outcome == "worse" and item.result.test == "paired"
    listing = subprocess.run(["git", "worktree", "list"], cwd=root, capture_output=True, text=True)
    assert len(listing.stdout.splitlines()) == 1
    with pytest.raises(UsageError, match="no such commit"):
        desired_at("no-such-branch", ["experiments"], root)
    with pytest.raises(UsageError, match="EXPERIMENT@REVISION"):
        Side.parse("hello@")
