"""Benchmark `himl plan` against an Azure ML workspace: the loopback server of the tests.

1,000 generated manifests (``gen_manifests.py``, every one given ``compute.target:
gpu-cluster``) are planned against a workspace holding 10,000 jobs (the desired runs, most
completed, some failed or retried, plus superseded history and archived runs of deleted
experiments: ``bench_plan.history``), served by ``tests/backends/azureml/server.py`` over HTTPS
to the real azure-ai-ml SDK, paged at ``--page-size`` jobs per page. Measured in one run:

- ``make_plan`` with the Azure ML backend (one paged listing of the managed jobs + one of the
  archived ones): wall time and the number of HTTP requests the server saw;
- the naive way: one ``jobs.get`` per desired run (timed on ``--naive-sample`` runs and
  extrapolated, unless ``--naive-all``), and its requests;
- ``make_plan`` with the local backend (MLflow SQLite) holding the same 10,000 runs.

The jobs are put into the server directly, as copies of one job the backend really submitted
with each run's own properties, tags and status (submitting 10,000 jobs through the SDK would
take minutes). Wall times are medians of ``--repeats`` runs in this process, after one warm-up.

    .venv/bin/python bench/bench_azureml_plan.py [--manifests 1000] [--jobs 10000]
        [--page-size 100] [--repeats 3] [--naive-sample 300] [--naive-all]
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, TypeVar

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests" / "backends" / "azureml"))

from server import WS_PATH, FakeWorkspace, backend_of  # noqa: E402

from bench_plan import fill_sqlite, history, write_manifests  # noqa: E402
from himl_manifest.backends.azureml.jobs import (  # noqa: E402
    job_experiment,
    job_name,
    job_properties,
    job_tags,
)
from himl_manifest.model import Lifecycle, RunRecord, RunStatus  # noqa: E402
from himl_manifest.operations.plan import desired_runs, make_plan  # noqa: E402
from himl_manifest.spec import RunSpec  # noqa: E402

T = TypeVar("T")
CLUSTER = "gpu-cluster"
AZURE_STATUS = {
    RunStatus.COMPLETED: "Completed",
    RunStatus.FAILED: "Failed",
    RunStatus.CANCELLED: "Canceled",
    RunStatus.RUNNING: "Running",
    RunStatus.QUEUED: "Queued",
}


def median_time(call: Callable[[], T], repeats: int) -> tuple[T, float, float]:
    """The result of ``call``, its median wall time and its median CPU time in this process
    over ``repeats`` runs (after a warm-up)."""
    result = call()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = call()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return result, statistics.median(times), statistics.median(cpu)


def to_cluster(root: Path) -> None:
    """Every manifest's ``compute.target`` becomes the cluster."""
    for path in sorted((root / "experiments").glob("*.yaml")):
        documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        for document in documents:
            document["compute"] = {**(document.get("compute") or {}), "target": CLUSTER}
        path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")


def seed_jobs(
    workspace: FakeWorkspace, template: dict[str, Any], records: list[tuple[RunSpec, RunRecord]]
) -> None:
    """Put one job per record into the workspace, shaped like ``template`` (a real job)."""
    jobs: dict[str, dict[str, Any]] = {}
    for run, record in records:
        name = job_name(run.run_name, record.attempt)
        job = copy.deepcopy(template)
        job["id"] = f"{WS_PATH}/jobs/{name}"
        job["name"] = name
        body = job["properties"]
        body["properties"] = job_properties(run, record.attempt)
        state = Lifecycle(record.state)
        tags = job_tags(run, Lifecycle.ACTIVE if state == Lifecycle.ARCHIVED else state)
        tags["himl.state"] = str(state.value)
        if record.has_checkpoint:
            tags["himl.checkpoints"] = "checkpoints/last.ckpt"
        body["tags"] = tags
        body["status"] = AZURE_STATUS[record.status]
        body["isArchived"] = state == Lifecycle.ARCHIVED
        body["experimentName"] = job_experiment(run)
        body["displayName"] = run.run_name
        jobs[name] = job
    with workspace.lock:
        workspace.jobs.clear()
        workspace.jobs.update(jobs)


def serve(folder: str, page_size: int, commands: Connection) -> None:
    """The fake workspace in a process of its own, as the service is: its work (filtering,
    JSON, TLS) is not timed as ours. Answers ``commands`` from the benchmark until ``close``."""
    workspace = FakeWorkspace(Path(folder), page_size=page_size)
    commands.send((workspace.url, str(workspace.cert_file)))
    while True:
        command, argument = commands.recv()
        if command == "seed":  # argument: the records; the template is the one job submitted
            (template,) = workspace.jobs.values()
            seed_jobs(workspace, copy.deepcopy(template), argument)
            commands.send(None)
        elif command == "requests":  # the listing views of the requests since ``argument``
            seen = workspace.requests[argument:]
            views = [r.query.get("listViewType", ["?"])[0] for r in seen]
            commands.send((len(workspace.requests), views))
        else:
            workspace.close()
            commands.send(None)
            return


class RemoteWorkspace:
    """What :func:`server.backend_of` reads of a workspace (its URL and certificate), served by
    :func:`serve` in a child process."""

    def __init__(self, folder: Path, page_size: int) -> None:
        context = multiprocessing.get_context("fork")
        self.commands, theirs = context.Pipe()
        self.process = context.Process(target=serve, args=(str(folder), page_size, theirs))
        self.process.start()
        self.url, cert = self.commands.recv()
        self.cert_file = Path(cert)

    def call(self, command: str, argument: Any = None) -> Any:
        self.commands.send((command, argument))
        return self.commands.recv()

    def requests_since(self, start: int) -> tuple[int, list[str]]:
        result: tuple[int, list[str]] = self.call("requests", start)
        return result

    def close(self) -> None:
        self.call("close")
        self.process.join(timeout=10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--naive-sample", type=int, default=300)
    parser.add_argument("--naive-all", action="store_true", help="one GET for every run")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="himl-bench-azureml-") as tmp:
        root = Path(tmp) / "repo"
        root.mkdir()
        write_manifests(args.manifests, root)
        to_cluster(root)
        os.chdir(root)
        desired = desired_runs(["experiments"])
        records = history(desired, args.jobs)
        print(
            f"{args.manifests} manifests, {len(desired)} desired runs, {len(records)} jobs, "
            f"{args.page_size} jobs per page",
            file=sys.stderr,
            flush=True,
        )

        workspace = RemoteWorkspace(Path(tmp), page_size=args.page_size)
        try:
            azure = backend_of(workspace, root)  # type: ignore[arg-type]
            azure.submit([desired[0]])  # one real job: the template of the others
            workspace.call("seed", records)

            def azure_plan() -> Any:
                return make_plan(["experiments"], azure)

            before, _ = workspace.requests_since(0)
            azure_result = azure_plan()
            after, views = workspace.requests_since(before)
            plan_requests = after - before
            pages = Counter(views)
            _, azure_s, azure_cpu = median_time(azure_plan, args.repeats)

            chosen = (
                desired if args.naive_all else desired[:: max(1, len(desired) // args.naive_sample)]
            )
            before, _ = workspace.requests_since(0)
            start = time.perf_counter()
            found = sum(azure._get(run.run_name, "naive") is not None for run in chosen)
            each_s = (time.perf_counter() - start) / len(chosen)
            naive_requests = workspace.requests_since(before)[0] - before
            assert naive_requests == len(chosen), (naive_requests, len(chosen))
            assert found
        finally:
            workspace.close()

        local = fill_sqlite(root, records)

        def local_plan() -> Any:
            return make_plan(["experiments"], type(local)(local.uri, root))

        local_result, local_s, local_cpu = median_time(local_plan, args.repeats)
        assert len(local_result.actions) == len(azure_result.actions)

    kinds = Counter(str(a.kind) for a in azure_result.actions)
    measured = (
        "all measured" if len(chosen) == len(desired) else f"{len(chosen)} timed, extrapolated"
    )
    print(f"{args.manifests} manifests, {len(desired)} desired runs, {len(records)} jobs")
    print(f"plan: {', '.join(f'{k}: {n}' for k, n in sorted(kinds.items()))}")
    print(f"listing pages: {dict(pages)}\n")
    print("| what | wall time (s) | CPU time here (s) | HTTP requests | wall vs local plan |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| Azure ML backend: `make_plan` (paged listing) | {azure_s:.2f} | {azure_cpu:.2f} "
        f"| {plan_requests} "
        f"| {azure_s / local_s:.2f}x |"
    )
    naive_s = each_s * len(desired)
    print(
        f"| naive: one `jobs.get` per desired run ({measured}) | {naive_s:.1f} | | {len(desired)} "
        f"| {naive_s / local_s:.1f}x |"
    )
    print(
        f"| local backend (MLflow SQLite): `make_plan` | {local_s:.2f} | {local_cpu:.2f} | 0 "
        "| 1.00x |"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
