"""Benchmark `himl report`: 100 experiments x 5 seeds x 100 epochs x 10 metrics, local store.

Builds, in a temporary project, 100 manifests (5 seeds each) and a real MLflow SQLite store
holding their 500 completed runs, each with 10 metrics logged over 100 epochs plus Lightning's
``epoch`` and two test metrics (~560,000 metric rows), filled by bulk SQL inserts of rows shaped
like MLflow's own (creating them through the MLflow client would take many minutes). Then
measures, in one run, and prints a Markdown table:

- the core: ``make_report`` (manifests already expanded) over ``LocalStore``: one ``list_runs``
  and one ``metric_histories`` (one SQL read of the ``metrics`` table), then the statistics;
- ``metric_histories`` alone;
- the naive read: MLflow's ``MlflowClient.get_metric_history`` once per run and metric, on a
  sample of runs (``--naive-runs``), extrapolated to all 500 (``--naive-runs 500``: all);
- the whole `himl report --format json` command as a subprocess (median of ``--repeats``).

    .venv/bin/python bench/bench_report.py [--experiments 100] [--seeds 5] [--epochs 100]
        [--metrics 10] [--naive-runs 50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

from himl_manifest.backends.local import LocalStore  # noqa: E402
from himl_manifest.backends.local_records import run_tags  # noqa: E402
from himl_manifest.operations.plan import desired_runs  # noqa: E402
from himl_manifest.operations.report import make_report  # noqa: E402
from himl_manifest.spec import RunSpec  # noqa: E402

TARGET_S = 2.0
METRIC_NAMES = (
    "loss", "val_loss", "val_acc", "val_auc", "val_f1", "val_mae", "train_acc", "lr",
    "grad_norm", "val_dice",
)  # fmt: skip


def write_manifests(root: Path, experiments: int, seeds: int, epochs: int) -> None:
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    for i in range(experiments):
        (root / "experiments" / f"exp-{i:03d}.yaml").write_text(
            f"apiVersion: himl/v1\nkind: Experiment\nname: exp-{i:03d}\ncontainer: HelloWorld\n"
            f"seeds: {seeds}\nparams: {{learning_rate: {0.01 * (1 + i % 10)}}}\n"
            f"trainer:\n  max_epochs: {epochs}\n",
            encoding="utf-8",
        )


def metric_names(count: int) -> list[str]:
    names = list(METRIC_NAMES[:count])
    names += [f"extra_{i}" for i in range(count - len(names))]
    return names


def fill_store(root: Path, runs: list[RunSpec], epochs: int, metrics: int) -> LocalStore:
    """Every run completed, with ``metrics`` metrics over ``epochs`` epochs, by bulk inserts."""
    store = LocalStore(f"sqlite:///{root / 'mlflow.db'}", root)
    experiment_id = store.store.experiment_id("bench", store.artifact_root)
    template_id = store.store.create_run(
        experiment_id, run_tags(runs[0], 1, root / "outputs" / "x", "bench-host", "bench")
    )
    db = sqlite3.connect(root / "mlflow.db")
    db.row_factory = sqlite3.Row
    template = dict(db.execute("SELECT * FROM runs WHERE run_uuid = ?", (template_id,)).fetchone())
    db.row_factory = None
    db.execute("DELETE FROM tags WHERE run_uuid = ?", (template_id,))
    db.execute("DELETE FROM runs WHERE run_uuid = ?", (template_id,))
    rng = random.Random(0)
    names = metric_names(metrics)
    columns = list(template)
    run_rows, tag_rows, metric_rows, latest_rows = [], [], [], []
    for number, run in enumerate(runs):
        run_id = uuid.uuid4().hex
        row = dict(template, run_uuid=run_id, name=run.run_name, status="FINISHED")
        row["start_time"] = row["end_time"] = 1_700_000_000_000 + number
        run_rows.append(tuple(row[c] for c in columns))
        tags = run_tags(run, 1, root / "outputs" / run.run_name, "bench-host", "bench")
        tag_rows += [(key, value, run_id) for key, value in tags.items()]
        steps_per_epoch = 10
        for epoch in range(epochs):
            step = (epoch + 1) * steps_per_epoch - 1
            stamp = 1_700_000_000_000 + step
            metric_rows.append(("epoch", float(epoch), stamp, run_id, step, 0))
            for name in names:
                value = rng.random() / (1 + epoch)
                metric_rows.append((name, value, stamp, run_id, step, 0))
        last_step = epochs * steps_per_epoch
        for name in ("test_mse", "test_mae"):
            metric_rows.append((name, rng.random(), 1_800_000_000_000, run_id, last_step, 0))
        seen: dict[str, tuple[object, ...]] = {}
        for key, value, stamp, rid, step, is_nan in metric_rows[-(epochs * (len(names) + 1) + 2) :]:
            seen[key] = (key, value, stamp, step, is_nan, rid)
        latest_rows += list(seen.values())
    db.executemany(
        f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        run_rows,
    )
    db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
    db.executemany(
        "INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        metric_rows,
    )
    db.executemany(
        "INSERT INTO latest_metrics (key, value, timestamp, step, is_nan, run_uuid) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        latest_rows,
    )
    db.commit()
    db.close()
    print(f"  store: {len(run_rows)} runs, {len(metric_rows):,} metric rows", file=sys.stderr)
    return LocalStore(f"sqlite:///{root / 'mlflow.db'}", root)


def best_of(repeats: int, call: object) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def naive(store: LocalStore, run_ids: list[str], sample: int) -> tuple[int, float]:
    """MLflow's per-run, per-metric history calls on ``sample`` runs: (calls, seconds)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.uri)
    chosen = run_ids[:sample]
    calls = 0
    start = time.perf_counter()
    for run_id in chosen:
        for key in client.get_run(run_id).data.metrics:
            client.get_metric_history(run_id, key)
            calls += 1
    return calls, time.perf_counter() - start


def cli_seconds(root: Path, repeats: int) -> float:
    command = [sys.executable, "-m", "himl_manifest.cli.main", "report", "--format", "json"]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, check=False)
        times.append(time.perf_counter() - start)
        assert done.returncode == 0, done.stderr
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--metrics", type=int, default=10)
    parser.add_argument("--naive-runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="himl-bench-report-") as folder:
        root = Path(folder)
        write_manifests(root, args.experiments, args.seeds, args.epochs)
        runs = desired_runs([root / "experiments"])
        store = fill_store(root, runs, args.epochs, args.metrics)
        records = store.list_runs()
        ids = [record.run_id for record in records]
        report = make_report(store, runs)  # warm: scipy imported, caches filled
        assert len(report.experiments) == args.experiments and not report.incomplete
        core = best_of(args.repeats, lambda: make_report(store, runs))
        histories = best_of(args.repeats, lambda: store.metric_histories(ids))
        calls, naive_s = naive(store, ids, min(args.naive_runs, len(ids)))
        naive_all = naive_s * len(ids) / min(args.naive_runs, len(ids))
        whole = cli_seconds(root, args.repeats)
    runs_n = args.experiments * args.seeds
    rows = [
        "| what | seconds |",
        "|---|---:|",
        f"| `metric_histories` of {runs_n} runs (one SQL read) | {histories:.2f} |",
        f"| `make_report` (list_runs + metric_histories + statistics) | {core:.2f} |",
        f"| whole `himl report --format json` (process, median of {args.repeats}) | {whole:.2f} |",
        f"| naive: `get_metric_history` per run and metric ({calls} calls on "
        f"{min(args.naive_runs, runs_n)} runs, extrapolated to {runs_n}) | {naive_all:.1f} |",
    ]
    print("\n".join(rows))
    verdict = "met" if whole < TARGET_S else "NOT met"
    print(f"\nTarget: the whole command under {TARGET_S:.0f} s: {verdict} ({whole:.2f} s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
