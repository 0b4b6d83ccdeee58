"""`--different_seeds=N` on a local machine: seeds 0..N-1, each its own process and run.

Each child is ``python -m himl_manifest.runner.cli <the same flags> --random_seed=k`` (later
flags win), with its own run folder and run record; its display name gets ``seed <k>``. Up to
``--jobs`` children run at once (default: min(N, CPUs)); their output is prefixed with
``[seed k]``. The parent reports every seed and fails when any did.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO

from himl_manifest.runner.container import LightningContainer
from himl_manifest.runner.results import RunResult
from himl_manifest.runner.settings import RunSettings

#: Set for a child of `--different_seeds`: the file it writes its result to (JSON).
RESULT_FILE_ENV = "HIML_RESULT_FILE"

logger = logging.getLogger(__name__)
_print_lock = threading.Lock()


def child_argv(settings: RunSettings, container: LightningContainer, seed: int) -> list[str]:
    base = container.tag or type(container).__name__
    extra = ["--different_seeds=0", f"--random_seed={seed}", f"--tag={base} seed {seed}"]
    if settings.output_dir is not None:
        extra.append(f"--output_dir={settings.output_dir / f'seed_{seed}'}")
    return [sys.executable, "-m", "himl_manifest.runner.cli", *settings.argv, *extra]


def _relay(stream: IO[str], seed: int) -> None:
    for line in stream:
        with _print_lock:
            sys.stderr.write(f"[seed {seed}] {line}")
            sys.stderr.flush()


def _run_child(settings: RunSettings, container: LightningContainer, seed: int) -> RunResult:
    label = f"seed {seed}"
    with tempfile.TemporaryDirectory(prefix="himl-seed-") as tmp:
        result_file = Path(tmp) / "result.json"
        env = {**os.environ, RESULT_FILE_ENV: str(result_file)}
        env.pop("MLFLOW_RUN_ID", None)  # each seed is its own run
        process = subprocess.Popen(
            child_argv(settings, container, seed),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        _relay(process.stdout, seed)
        code = process.wait()
        if code != 0 or not result_file.is_file():
            return RunResult(None, "train", ok=False, error=f"exit code {code}", label=label)
        data = json.loads(result_file.read_text(encoding="utf-8"))
    return RunResult(
        output_dir=Path(data["output_dir"]) if data.get("output_dir") else None,
        mode=data.get("mode", "train"),
        run_id=data.get("run_id"),
        metrics=data.get("metrics", {}),
        checkpoint=data.get("checkpoint"),
        seconds=data.get("seconds", 0.0),
        label=label,
    )


def run_seeds(settings: RunSettings, container: LightningContainer) -> list[RunResult]:
    """Run seeds 0..N-1 as child processes, ``settings.jobs`` at a time."""
    count = container.different_seeds
    jobs = settings.jobs or min(count, os.cpu_count() or 1)
    logger.info("running seeds 0..%d, %d at a time", count - 1, jobs)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_child, settings, container, k) for k in range(count)]
        return [f.result() for f in futures]
