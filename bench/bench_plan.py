"""Benchmark `himl plan`'s core: 1,000 manifests (~3,000 runs) against a store of 10,000 runs.

Measures, in one run, and prints a Markdown table:

- loading + validating + expanding the manifests;
- (a) the MemoryBackend: ``make_plan`` (one bulk ``list_runs``), beside the naive approach of one
  lookup per desired run (``MemoryBackend.get_run``, plus a simulated per-query cost, added
  rather than slept: the measured cost of one MLflow query when (b) runs, else 2 ms);
- (b) a real MLflow SQLite store (the local backend), when ``himl_manifest.backends.local`` is
  importable: ``list_runs`` read straight from SQLite (3 queries, the path `himl plan` takes)
  beside the same read through MLflow's paginated ``search_runs`` (the fallback, and the path
  before); ``make_plan`` with ``LocalBackend``, beside one
  ``search_runs`` per desired run name (timed on a sample, extrapolated to all, unless
  ``--naive-all``); and the whole ``himl plan`` command as a subprocess.

The store is filled with realistic records: every desired run (most completed, some failed,
some with an older attempt), older superseded versions, and runs of deleted experiments.
The SQLite store is filled by copying one real MLflow run's rows in bulk (creating 10,000 runs
through the MLflow client would take minutes).

Then (unless ``--scale ''``) the issue's targets, side by side in one run: the real
``himl plan`` CLI as a subprocess (median wall time of ``--repeats`` runs, peak RSS from the
child's own rusage) on stores of each ``--scale`` size (the same live runs; the rest superseded
or archived history), against ``python -c "import mlflow"`` measured the same way.

    .venv/bin/python bench/bench_plan.py [--manifests 1000] [--records 10000] [--no-mlflow]
        [--scale 10000,50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from himl_manifest.backends.local_sql import QUERIES  # noqa: E402
from himl_manifest.backends.memory import MemoryBackend  # noqa: E402
from himl_manifest.model import Lifecycle, RunRecord, RunStatus  # noqa: E402
from himl_manifest.operations.plan import desired_runs, make_plan  # noqa: E402
from himl_manifest.plan.planner import plan  # noqa: E402
from himl_manifest.spec import RunSpec  # noqa: E402

T = TypeVar("T")
TARGET_S = 3.0


def timed(call: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    result = call()
    elapsed = time.perf_counter() - start
    print(f"  {getattr(call, '__name__', 'step')}: {elapsed:.2f} s", file=sys.stderr, flush=True)
    return result, elapsed


# --- the manifests and the store's records ----------------------------------------------------


def write_manifests(count: int, root: Path) -> None:
    try:
        from gen_manifests import generate  # another engineer's realistic generator
    except ImportError:
        generate = None
    if generate is not None:
        generate(count, root)
        return
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    for i in range(count):
        (root / "experiments" / f"exp-{i:05d}.yaml").write_text(
            f"apiVersion: himl/v1\nkind: Experiment\nname: exp-{i:05d}\ncontainer: HelloWorld\n"
            f"seeds: 3\ntrainer:\n  max_epochs: {10 + i % 5}\n",
            encoding="utf-8",
        )


def history(desired: list[RunSpec], total: int, seed: int = 0) -> list[tuple[RunSpec, RunRecord]]:
    """``total`` records: the desired runs (mostly in sync), their history, deleted ones."""
    rng = random.Random(seed)
    out: list[tuple[RunSpec, RunRecord]] = []

    def add(run: RunSpec, **fields: Any) -> None:
        record = RunRecord(
            run_name=run.run_name,
            run_id=uuid.uuid4().hex,
            experiment=run.experiment,
            seed=run.seed,
            spec_hash=run.spec_hash,
            status=RunStatus.COMPLETED,
            spec_source=dict(run.spec),
            manifest_path=run.manifest_path,
            has_checkpoint=True,
            provenance={"conda_sha256": run.conda_sha256 or ""},
        )
        out.append((run, dataclasses.replace(record, **fields)))

    for run in desired:
        roll = rng.random()
        if roll < 0.03:
            continue  # a new seed or experiment: create
        if roll < 0.06:
            add(run, status=RunStatus.FAILED, has_checkpoint=False)  # keep (failed, not retried)
            continue
        if roll < 0.10:
            add(run, status=RunStatus.FAILED, has_checkpoint=False)
            add(run, attempt=2)  # retried once, then completed
            continue
        add(run)
    while len(out) < total:
        run = rng.choice(desired)
        if rng.random() < 0.7:  # an older version of a desired run, superseded
            old = _variant(run, f"old{len(out)}")
            add(old, state=Lifecycle.SUPERSEDED)
        else:  # a run of an experiment deleted long ago, archived or orphaned
            gone = _variant(run, f"gone{len(out)}", experiment=f"deleted-{len(out)}")
            add(gone, state=Lifecycle.ACTIVE if rng.random() < 0.01 else "archived")
    return out[:total]


def _variant(run: RunSpec, salt: str, experiment: str | None = None) -> RunSpec:
    name = experiment or run.experiment
    digest = uuid.uuid5(uuid.NAMESPACE_URL, run.run_name + salt).hex
    return dataclasses.replace(
        run,
        experiment=name,
        spec_hash=f"v1:{digest}",
        run_name=f"{name}-s{run.seed}-{digest[:8]}",
    )


# --- (a) the memory backend -------------------------------------------------------------------


def naive_memory(desired: list[RunSpec], backend: MemoryBackend) -> int:
    """One lookup per desired run: what a per-manifest planner does."""
    before = backend.queries
    found = 0
    for run in desired:
        found += bool(backend.get_run(run.run_name))
    assert found
    return backend.queries - before


# --- (b) a real MLflow SQLite store -----------------------------------------------------------


def fill_sqlite(root: Path, records: list[tuple[RunSpec, RunRecord]]) -> Any:
    """A LocalBackend whose store holds ``records``, filled by bulk-copying one real run."""
    from himl_manifest.backends.local import LocalBackend
    from himl_manifest.backends.local_records import run_tags
    from himl_manifest.records import MLFLOW_TO_STATUS

    to_mlflow = {status: name for name, status in MLFLOW_TO_STATUS.items()}
    backend = LocalBackend(f"sqlite:///{root / 'mlflow.db'}", root)
    experiment_id = backend.store.experiment_id("bench", backend.artifact_root)
    first_run = records[0][0]
    template_id = backend.store.create_run(
        experiment_id, run_tags(first_run, 1, root / "outputs" / "x", "bench-host", "bench")
    )
    db = sqlite3.connect(root / "mlflow.db")
    db.row_factory = sqlite3.Row
    template = dict(db.execute("SELECT * FROM runs WHERE run_uuid = ?", (template_id,)).fetchone())
    run_rows, tag_rows = [], []
    for number, (run, record) in enumerate(records):
        run_id = uuid.uuid4().hex
        row = dict(template, run_uuid=run_id, name=run.run_name)
        row["status"] = to_mlflow.get(record.status, "FINISHED")
        row["start_time"] = row["end_time"] = 1_700_000_000_000 + number
        run_rows.append(row)
        output_dir = root / "outputs" / f"{run.run_name}-{record.attempt}"
        tags = run_tags(run, record.attempt, output_dir, "bench-host", "bench")
        tags["himl.state"] = record.state
        tag_rows += [(key, value, run_id) for key, value in tags.items()]
    db.execute("DELETE FROM tags WHERE run_uuid = ?", (template_id,))
    db.execute("DELETE FROM runs WHERE run_uuid = ?", (template_id,))
    columns = list(template)
    db.executemany(
        f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        [tuple(row[c] for c in columns) for row in run_rows],
    )
    db.executemany("INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", tag_rows)
    db.commit()
    db.close()
    return backend


def search_runs_records(backend: Any) -> list[RunRecord]:
    """``list_runs`` through MLflow's paginated ``search_runs`` (the path before the SQL read)."""
    from himl_manifest.backends import local_sql

    fast = local_sql.read_managed_runs
    local_sql.read_managed_runs = lambda db, full=True, history_of=None: None
    try:
        return list(backend.list_runs())
    finally:
        local_sql.read_managed_runs = fast


def naive_mlflow(desired: list[RunSpec], backend: Any, sample: int) -> tuple[int, float]:
    """One ``search_runs`` per desired run name, on ``sample`` runs: (queries, seconds each)."""
    chosen = desired if sample >= len(desired) else random.Random(1).sample(desired, sample)
    start = time.perf_counter()
    for run in chosen:
        backend.store.by_run_name(run.run_name)
    return len(chosen), (time.perf_counter() - start) / len(chosen)


class CountingStore:
    """Counts the MLflow client calls that read the store."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if name.startswith(("search_", "get_")) and callable(attribute):

            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=int, default=1000)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--no-mlflow", action="store_true", help="only the MemoryBackend")
    parser.add_argument("--naive-sample", type=int, default=100)
    parser.add_argument("--naive-all", action="store_true", help="time every naive query")
    parser.add_argument(
        "--scale",
        default="10000,50000",
        help="store sizes for the `himl plan` vs `import mlflow` table ('' to skip)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="subprocess runs per figure")
    args = parser.parse_args()
    scales = [int(n) for n in args.scale.split(",") if n.strip()]
    if scales and not args.no_mlflow:
        for line in scale_rows(args.manifests, scales, args.repeats):
            print(line, flush=True)
        print()

    rows: list[tuple[str, str, str, str]] = []
    with tempfile.TemporaryDirectory(prefix="himl-bench-plan-") as tmp:
        root = Path(tmp)
        write_manifests(args.manifests, root)
        os.chdir(root)
        desired, load_s = timed(lambda: desired_runs(["experiments"]))
        records = history(desired, args.records)
        observed = [record for _, record in records]
        rows.append(
            (f"load + validate + expand {args.manifests} manifests", f"{load_s:.2f}", "0", "")
        )
        result, plan_s = timed(lambda: plan(desired, observed))
        rows.append(
            (
                f"planner alone: {len(desired)} runs x {len(observed)} records",
                f"{plan_s:.3f}",
                "0",
                "",
            )
        )

        per_query_s = 0.002
        local = None
        if not args.no_mlflow:
            try:
                local, _ = timed(lambda: fill_sqlite(root, records))
            except ImportError as exc:
                print(f"(no local backend: {exc}; MemoryBackend only)", file=sys.stderr)
        if local is not None:
            fresh = type(local)(local.uri, root)  # as `himl plan` opens it: MLflow not used yet
            listed, list_s = timed(fresh.list_runs)
            assert len(listed) == len(observed), (len(listed), len(observed))
            assert fresh.store.fast_reads == 1
            counter = CountingStore(local.store.client)
            local.store.client = counter
            searched, search_s = timed(lambda: search_runs_records(local))
            assert searched == listed
            search_reads = counter.calls
            rows.append(
                (
                    "(b) MLflow SQLite: list_runs via search_runs (old path)",
                    f"{search_s:.2f}",
                    f"{search_reads} MLflow reads (paginated)",
                    "",
                )
            )
            counter.calls = 0
            local_plan, total_s = timed(lambda: make_plan(["experiments"], local))
            reads = counter.calls
            # the store's view differs from the generated records only in has_checkpoint
            # (the local backend looks for the file on disk): same number of actions
            assert len(local_plan.actions) == len(result.actions)
            rows.append(
                (
                    "(b) MLflow SQLite: list_runs via SQL (new path, no MLflow import)",
                    f"{list_s:.2f}",
                    f"{QUERIES} SQL queries",
                    "",
                )
            )
            rows.append(
                (
                    "(b) MLflow SQLite: make_plan (load + list_runs + plan)",
                    f"{total_s:.2f}",
                    f"1 list_runs = {QUERIES} SQL queries, {reads} MLflow reads",
                    "yes" if total_s < TARGET_S else "**no**",
                )
            )
            sample = len(desired) if args.naive_all else args.naive_sample
            queries, each_s = naive_mlflow(desired, local, sample)
            per_query_s = each_s
            measured = "measured" if queries == len(desired) else f"{queries} timed, extrapolated"
            rows.append(
                (
                    f"(b) naive: one search_runs per run ({measured})",
                    f"{each_s * len(desired):.1f}",
                    f"{len(desired)} list queries",
                    "",
                )
            )
            cli_s = run_cli(root)
            rows.append(
                (
                    "(b) whole `himl plan` command (subprocess, local backend)",
                    f"{cli_s:.2f}",
                    "1 list_runs",
                    "yes" if cli_s < TARGET_S else "**no**",
                )
            )

        memory = MemoryBackend(observed)
        memory_plan, memory_s = timed(lambda: make_plan(["experiments"], memory))
        assert memory_plan.actions == result.actions  # the same decisions from either store
        rows.append(
            (
                "(a) MemoryBackend: make_plan (load + list_runs + plan)",
                f"{memory_s:.2f}",
                str(memory.queries),
                "yes" if memory_s < TARGET_S else "**no**",
            )
        )
        # the per-query cost is added, not slept: the same total without minutes of waiting
        fast = MemoryBackend(observed)
        naive_queries, naive_s = timed(lambda: naive_memory(desired, fast))
        simulated_s = naive_s + naive_queries * per_query_s
        rows.append(
            (
                f"(a) naive: one get_run per run (+{per_query_s * 1000:.1f} ms/query simulated)",
                f"{simulated_s:.1f}",
                str(naive_queries),
                "",
            )
        )
        counts = ", ".join(
            f"{k}: {result.count(k)}" for k in sorted({a.kind for a in result.actions})
        )
    print(f"{args.manifests} manifests, {len(desired)} desired runs, {len(observed)} records")
    print(f"plan: {counts}\n")
    print("| what | wall time (s) | store queries | under 3 s |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


def run_cli(root: Path) -> float:
    return timed_process(himl_plan(root), root)[0]


def himl_plan(root: Path) -> list[str]:
    """The real `himl plan` command line (the console script of this venv)."""
    himl = Path(sys.executable).with_name("himl")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    return [str(himl), "plan", "experiments/", "--no-color", "--tracking-uri", uri]


#: Runs a command (output discarded) and prints its wall time and peak RSS (KiB), measured by
#: a small parent: rusage taken in the bench itself would count the bench's own memory, as
#: the child is forked from it before it execs.
MEASURE = (
    "import resource, subprocess, sys, time; start = time.perf_counter(); "
    "code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
    "print(time.perf_counter() - start, "
    "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)"
)


def timed_process(command: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run of ``command``."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *command], cwd=cwd, capture_output=True, text=True
    )
    wall, peak_kib, code = done.stdout.split()
    if code not in ("0", "2"):  # 2: the plan has changes
        print(f"{command} exited {code}", file=sys.stderr)
    return float(wall), int(peak_kib) / 1024


def median_process(command: list[str], cwd: Path, repeats: int) -> tuple[float, float]:
    """The median wall time and the highest peak RSS of ``repeats`` runs of ``command``."""
    runs = [timed_process(command, cwd) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), max(r[1] for r in runs)


def scale_rows(manifests: int, scales: list[int], repeats: int) -> list[str]:
    """The issue's targets, side by side in one run: `himl plan` (the real CLI, a subprocess)
    at each store size against ``python -c "import mlflow"``."""
    mlflow_s, mlflow_mb = median_process([sys.executable, "-c", "import mlflow"], HERE, repeats)
    lines = [
        f"| what | wall time (s), median of {repeats} | peak RSS (MB) | ratio | target | met |",
        "|---|---|---|---|---|---|",
        f'| `python -c "import mlflow"` | {mlflow_s:.2f} | {mlflow_mb:.0f} | 1.00 | | |',
    ]
    figures: dict[int, tuple[float, float]] = {}
    for records in scales:
        with tempfile.TemporaryDirectory(prefix=f"himl-bench-plan-{records}-") as tmp:
            root = Path(tmp)
            write_manifests(manifests, root)
            os.chdir(root)
            desired = desired_runs(["experiments"])
            # the same live runs at every size (same seed): the rest is superseded/archived
            fill_sqlite(root, history(desired, records))
            os.chdir(HERE)
            wall_s, peak_mb = median_process(himl_plan(root), root, repeats)
        figures[records] = (wall_s, peak_mb)
        what = f"`himl plan`: {manifests} manifests x {records} stored runs"
        lines.append(
            f"| {what} | {wall_s:.2f} | {peak_mb:.0f} | {wall_s / mlflow_s:.2f}x import mlflow"
            f" | <= 1.0x | {'yes' if wall_s <= mlflow_s else '**no**'} |"
        )
    if len(scales) > 1:
        small, large = figures[scales[0]], figures[scales[-1]]
        ratio = large[0] / small[0]
        lines.append(
            f"| {scales[-1]} vs {scales[0]} stored runs | | | {ratio:.2f}x | <= 1.3x"
            f" | {'yes' if ratio <= 1.3 else '**no**'} |"
        )
        lines.append(
            f"| peak RSS at {scales[-1]} stored runs | | {large[1]:.0f} | | < 250 MB"
            f" | {'yes' if large[1] < 250 else '**no**'} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
