"""`himl report` and `himl compare` on real HelloWorld runs: every number checked against the
runs' own metrics.csv, every p-value against scipy's for the same arrays."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from report_helpers import (
    SEEDS,
    Project,
    csv_curves,
    csv_final_metrics,
    manifest,
    ordered,
    values_by_seed,
)

pytestmark = pytest.mark.slow

FINALS = ("test_mse", "test_mae", "val_loss.last", "val_loss.best", "loss.last", "loss.best")


def expected_summary(values: list[float]) -> dict[str, float]:
    array = np.array(values)
    n = len(array)
    low, high = scipy.stats.t.interval(0.95, n - 1, loc=array.mean(), scale=scipy.stats.sem(array))
    return {
        "n": n,
        "mean": array.mean(),
        "std": array.std(ddof=1),
        "ci_low": low,
        "ci_high": high,
        "min": array.min(),
        "max": array.max(),
    }


def test_report_numbers_match_the_runs_metrics_csv(trained: Project) -> None:
    document = trained.json("report")
    assert document["format"] == "himl-report/v1"
    assert document["complete"] is True and document["incomplete"] == []
    experiments = {e["name"]: e for e in document["experiments"]}
    assert set(experiments) == {"hello", "hello-slow"}
    for name, experiment in experiments.items():
        assert [u["seed"] for u in experiment["completed"]] == SEEDS
        assert experiment["failed"] == experiment["running"] == experiment["missing"] == []
        assert set(experiment["metrics"]) == set(FINALS)
        for metric in FINALS:
            got = experiment["metrics"][metric]
            assert got["direction"] == "min"
            want = expected_summary(ordered(values_by_seed(trained, name, metric)))
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (name, metric, key)
        # each run's own final metrics, as logged
        folders = trained.folders(name)
        for run in experiment["runs"]:
            want_run = csv_final_metrics(folders[run["seed"]])
            assert run["final_metrics"] == pytest.approx(want_run, rel=1e-6)
            assert run["fold"] is None


def test_text_and_markdown_reports(trained: Project) -> None:
    text = trained.himl("report", "hello")
    assert text.returncode == 0, text.stderr
    first = text.stdout.splitlines()[0]
    assert first.startswith("hello") and "3 of 3 runs completed" in first
    mean = np.mean(ordered(values_by_seed(trained, "hello", "test_mse")))
    assert f"{mean:.4g}" in text.stdout
    assert "hello-slow" not in text.stdout
    markdown = trained.himl("report", "--format", "markdown")
    assert markdown.returncode == 0, markdown.stderr
    assert "### hello-slow" in markdown.stdout
    assert "| `test_mse` | lower | 3 |" in markdown.stdout


def test_compare_paired_numbers_match_scipy(trained: Project) -> None:
    document = trained.json("compare", "hello", "hello-slow")
    assert document["format"] == "himl-compare/v1"
    metrics = {m["metric"]: m for m in document["metrics"]}
    assert set(metrics) == set(FINALS)
    for metric in FINALS:
        a = np.array(ordered(values_by_seed(trained, "hello", metric)))
        b = np.array(ordered(values_by_seed(trained, "hello-slow", metric)))
        got = metrics[metric]
        assert got["test"] == "paired"
        assert [u["seed"] for u in got["paired_units"]] == SEEDS
        want = scipy.stats.ttest_rel(b, a)
        assert got["p"] == pytest.approx(want.pvalue, rel=1e-9)
        differences = b - a
        half = scipy.stats.t.ppf(0.975, 2) * differences.std(ddof=1) / np.sqrt(3)
        assert got["diff"] == pytest.approx(differences.mean(), rel=1e-9)
        assert got["ci_low"] == pytest.approx(differences.mean() - half, rel=1e-9)
        assert got["ci_high"] == pytest.approx(differences.mean() + half, rel=1e-9)
        d_z = differences.mean() / differences.std(ddof=1)
        assert got["effect_size"] == pytest.approx(d_z, rel=1e-9)
        assert got["effect_size_kind"] == "d_z"
        assert got["mean_a"] == pytest.approx(a.mean()) and got["mean_b"] == pytest.approx(b.mean())
        assert got["too_small"] is False


def test_compare_unpaired_is_welch(trained: Project) -> None:
    document = trained.json("compare", "hello", "hello-slow", "--unpaired")
    item = next(m for m in document["metrics"] if m["metric"] == "test_mse")
    a = np.array(ordered(values_by_seed(trained, "hello", "test_mse")))
    b = np.array(ordered(values_by_seed(trained, "hello-slow", "test_mse")))
    want = scipy.stats.ttest_ind(b, a, equal_var=False)
    assert item["test"] == "welch"
    assert item["p"] == pytest.approx(want.pvalue, rel=1e-9)
    assert item["df"] == pytest.approx(want.df, rel=1e-9)
    pooled = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)  # equal n: the pooled sd
    assert item["effect_size"] == pytest.approx((b.mean() - a.mean()) / pooled, rel=1e-9)


def worse_store(trained: Project, folder: Path, by: float = 0.05) -> str:
    """A copy of the store in which every hello-slow run logged, after its test, a test_mse
    ``by`` (plus a little per seed) above hello's run of the same seed: B clearly worse."""
    from mlflow.tracking import MlflowClient

    copy = folder / "mlflow.db"
    shutil.copy(trained.root / "mlflow.db", copy)
    uri = f"sqlite:///{copy}"
    a = values_by_seed(trained, "hello", "test_mse")
    client = MlflowClient(uri)
    for run in trained.runs():
        if run["experiment"] == "hello-slow":
            worse = a[run["seed"]] + by + run["seed"] / 1000
            client.log_metric(run["run_id"], "test_mse", worse, step=10_000)
    return uri


def test_the_regression_gate_exit_codes(trained: Project, tmp_path: Path) -> None:
    # on the trained runs: exactly what scipy's confidence interval says
    a = np.array(ordered(values_by_seed(trained, "hello", "test_mse")))
    b = np.array(ordered(values_by_seed(trained, "hello-slow", "test_mse")))
    interval = scipy.stats.ttest_rel(b, a).confidence_interval(0.95)
    gate = ("--fail-if-worse", "test_mse")
    done = trained.himl("compare", "hello", "hello-slow", *gate)
    assert done.returncode == (3 if interval.low > 0 else 0), done.stdout
    reverse = trained.himl("compare", "hello-slow", "hello", *gate)
    assert reverse.returncode == (3 if interval.high < 0 else 0), reverse.stdout

    # B made clearly worse (in a copy of the store): the gate fails, within tolerance it passes
    uri = worse_store(trained, tmp_path)
    worse = trained.himl("compare", "hello", "hello-slow", *gate, uri=uri)
    assert worse.returncode == 3, worse.stderr
    assert "--fail-if-worse test_mse: FAILED" in worse.stdout
    assert "B's test_mse is higher (worse) by 0.051" in worse.stdout
    better = trained.himl("compare", "hello-slow", "hello", *gate, uri=uri)
    assert better.returncode == 0, better.stderr
    assert "B's test_mse is lower (better) by 0.051" in better.stdout
    loose = trained.himl(
        "compare", "hello", "hello-slow", "--fail-if-worse", "test_mse:0.1", uri=uri
    )
    assert loose.returncode == 0, loose.stdout
    tight = trained.himl(
        "compare", "hello", "hello-slow", "--fail-if-worse", "test_mse:0.01", uri=uri
    )
    assert tight.returncode == 3, tight.stdout
    share = 100 * 0.2 / float(a.mean())  # 0.2 in percent of A's mean: far beyond 0.052
    relative = trained.himl(
        "compare", "hello", "hello-slow", "--fail-if-worse", f"test_mse:{share:.0f}%", uri=uri
    )
    assert relative.returncode == 0, relative.stdout

    unknown = trained.himl("compare", "hello", "hello-slow", "--fail-if-worse", "test_mes")
    assert unknown.returncode == 1
    assert "did you mean 'test_mse'?" in unknown.stdout
    bad = trained.himl("compare", "hello", "hello-slow", "--fail-if-worse", "test_mse:lots")
    assert bad.returncode == 64
    assert "not a number" in bad.stderr
    nosuch = trained.himl("compare", "hello", "nope")
    assert nosuch.returncode == 64 and "no experiment 'nope'" in nosuch.stderr


def test_compare_markdown_fits_a_pr_comment(trained: Project, tmp_path: Path) -> None:
    uri = worse_store(trained, tmp_path)
    done = trained.himl(
        "compare",
        "hello",
        "hello-slow",
        "--format",
        "markdown",
        "--fail-if-worse",
        "test_mse",
        uri=uri,
    )
    assert done.returncode == 3
    lines = done.stdout.splitlines()
    assert lines[0] == "<!-- himl-compare -->"
    assert lines[1] == "### himl compare: `hello` (A) vs `hello-slow` (B)"
    assert any(line.startswith("❌ --fail-if-worse test_mse: FAILED") for line in lines)
    assert any(line.startswith("| `test_mse` | lower | paired | 3 | 3 |") for line in lines)


def test_failed_running_and_missing_runs(trained: Project, tmp_path: Path) -> None:
    """A copy of the store where seed 1 failed and seed 2 is running on another host, and
    manifests that ask for a fourth seed never applied."""
    from mlflow.tracking import MlflowClient

    from himl_manifest.records import TAG_HOST

    copy = tmp_path / "mlflow.db"
    shutil.copy(trained.root / "mlflow.db", copy)
    uri = f"sqlite:///{copy}"
    runs = {r["seed"]: r for r in trained.runs() if r["experiment"] == "hello"}
    client = MlflowClient(uri)
    client.set_terminated(runs[1]["run_id"], status="FAILED")
    client.set_tag(runs[1]["run_id"], "himl.error_tail", "RuntimeError: out of patience")
    client.update_run(runs[2]["run_id"], status="RUNNING")
    client.set_tag(runs[2]["run_id"], TAG_HOST, "another-machine")
    alt = trained.root / f"alt-{tmp_path.name}"
    alt.mkdir()
    (alt / "hello.yaml").write_text(manifest("hello", seeds=4), encoding="utf-8")
    try:
        document = trained.json("report", "hello", "-m", str(alt), uri=uri)
        text = trained.himl("report", "hello", "-m", str(alt), uri=uri)
    finally:
        shutil.rmtree(alt)
    (experiment,) = document["experiments"]
    assert document["complete"] is False
    assert document["incomplete"] == [
        "hello: 1 of 4 runs completed; seed 1 failed; seed 2 running; seed 3 missing"
    ]
    assert [u["seed"] for u in experiment["completed"]] == [0]
    assert [u["seed"] for u in experiment["failed"]] == [1]
    assert [u["seed"] for u in experiment["running"]] == [2]
    assert [u["seed"] for u in experiment["missing"]] == [3]
    test_mse = experiment["metrics"]["test_mse"]
    assert test_mse["n"] == 1 and test_mse["std"] is None and test_mse["ci_low"] is None
    assert test_mse["mean"] == pytest.approx(values_by_seed(trained, "hello", "test_mse")[0])
    lines = text.stdout.splitlines()
    assert lines[0] == "INCOMPLETE RESULTS: the statistics count completed runs only"
    assert "  seed 1: failed" in text.stdout and "RuntimeError: out of patience" in text.stdout


def test_plots_and_the_html_page(trained: Project, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "plots"
    done = trained.himl("report", "--plot", str(out))
    assert done.returncode == 0, done.stderr
    pngs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert pngs == [
        "hello-slow/loss.png",
        "hello-slow/val_loss.png",
        "hello/loss.png",
        "hello/val_loss.png",
    ]
    for path in out.rglob("*.png"):
        assert path.stat().st_size > 20_000
        with Image.open(path) as image:
            assert image.size == (1050, 630)
            described = __import__("json").loads(image.text["Description"])
        assert described["runs"] == 3
        assert described["lines"] == 4  # one per seed, and the mean
    page = (out / "report.html").read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 4
    assert "http://" not in page and "https://" not in page
    assert "<h2>hello</h2>" in page and "test_mse" in page


def test_a_figure_draws_each_run_and_the_mean(trained: Project) -> None:
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D

    from himl_manifest.backends.local import LocalStore
    from himl_manifest.operations.plan import desired_runs
    from himl_manifest.operations.report import make_report
    from himl_manifest.report.plots import figure

    store = LocalStore(trained.uri, trained.root)
    report = make_report(store, desired_runs([trained.root / "experiments"]), ["hello"])
    (experiment,) = report.experiments
    fig = figure(experiment, "val_loss")
    (axes,) = fig.axes
    lines = [line for line in axes.get_children() if isinstance(line, Line2D)]
    drawn = [line for line in lines if line.get_label() and not line.get_label().startswith("_")]
    assert sorted(line.get_label() for line in drawn) == [
        "mean of 3 runs",
        "seed 0",
        "seed 1",
        "seed 2",
    ]
    assert sum(isinstance(c, PolyCollection) for c in axes.get_children()) == 1  # the band
    assert axes.get_xlabel() == "epoch" and axes.get_ylabel() == "val_loss"
    curves = {
        seed: csv_curves(folder)["val_loss"] for seed, folder in trained.folders("hello").items()
    }
    mean_line = next(line for line in drawn if line.get_label().startswith("mean"))
    epochs = sorted(curves[0])
    want = [np.mean([curves[s][e] for s in SEEDS]) for e in epochs]
    assert list(mean_line.get_xdata()) == epochs
    assert list(mean_line.get_ydata()) == pytest.approx(want, rel=1e-6)
    legend = axes.get_legend()
    assert legend is not None and len(legend.get_texts()) == 5  # 3 runs, band, mean
