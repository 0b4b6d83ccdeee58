"""`--different_seeds=N` and `--crossval_count=K` on a local machine: each seed, or each
cross-validation fold, its own process and run.

Each child is ``python -m himl_manifest.runner.cli <the same flags> <its own>`` (later flags
win), with its own run folder and run record:

- seeds: ``--random_seed=k`` for k in 0..N-1, named ``<experiment>-s<k>`` (with ``--tag``:
  ``<tag> seed <k>``), output ``[seed k]``, folder ``<--output_dir>/seed_<k>``;
- folds: ``--crossval_index=i`` for i in 0..K-1 (same ``--random_seed``; each fold is seeded
  with seed + i + 1, the reference's rule), named ``<experiment>-s<seed>-f<i>`` (with
  ``--tag``: ``<tag> fold <i>``), output ``[fold i]``, folder ``<--output_dir>/fold_<i>``.

Up to ``--jobs`` children run at once (default: min(count, CPUs)). The parent reports every
child and fails when any did.
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
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from himl_manifest.runner.container import LightningContainer
from himl_manifest.runner.results import RunResult
from himl_manifest.runner.settings import RunSettings

#: Set for a child of `--different_seeds`: the file it writes its result to (JSON).
RESULT_FILE_ENV = "HIML_RESULT_FILE"

logger = logging.getLogger(__name__)
_print_lock = threading.Lock()


@dataclass(frozen=True)
class Child:
    """One child process of a fan-out: what it is called, its own flags, its folder."""

    label: str  # "seed 3", "fold 1": output prefix, result label, tag suffix
    flags: tuple[str, ...]
    folder: str  # under --output_dir


def seed_child(seed: int) -> Child:
    return Child(f"seed {seed}", ("--different_seeds=0", f"--random_seed={seed}"), f"seed_{seed}")


def fold_child(fold: int) -> Child:
    return Child(f"fold {fold}", (f"--crossval_index={fold}",), f"fold_{fold}")


def child_argv(settings: RunSettings, container: LightningContainer, child: Child) -> list[str]:
    extra = list(child.flags)
    if container.tag:  # else named by the one rule: <experiment>-s<seed>[-f<fold>]
        extra.append(f"--tag={container.tag} {child.label}")
    if settings.output_dir is not None:
        extra.append(f"--output_dir={settings.output_dir / child.folder}")
    return [sys.executable, "-m", "himl_manifest.runner.cli", *settings.argv, *extra]


def _relay(stream: IO[str], label: str) -> None:
    for line in stream:
        with _print_lock:
            sys.stderr.write(f"[{label}] {line}")
            sys.stderr.flush()


def _run_child(settings: RunSettings, container: LightningContainer, child: Child) -> RunResult:
    label = child.label
    with tempfile.TemporaryDirectory(prefix="himl-child-") as tmp:
        result_file = Path(tmp) / "result.json"
        env = {**os.environ, RESULT_FILE_ENV: str(result_file)}
        env.pop("MLFLOW_RUN_ID", None)  # each child is its own run
        process = subprocess.Popen(
            child_argv(settings, container, child),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        _relay(process.stdout, label)
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


def _run_children(
    settings: RunSettings, container: LightningContainer, children: list[Child], what: str
) -> list[RunResult]:
    jobs = settings.jobs or min(len(children), os.cpu_count() or 1)
    logger.info("running %s, %d at a time", what, jobs)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run_child, settings, container, child) for child in children]
        return [f.result() for f in futures]


def run_seeds(settings: RunSettings, container: LightningContainer) -> list[RunResult]:
    """Run seeds 0..N-1 as child processes, ``settings.jobs`` at a time."""
    count = container.different_seeds
    children = [seed_child(k) for k in range(count)]
    return _run_children(settings, container, children, f"seeds 0..{count - 1}")


def run_folds(settings: RunSettings, container: LightningContainer) -> list[RunResult]:
    """Run cross-validation folds 0..K-1 as child processes, ``settings.jobs`` at a time."""
    count = container.crossval_count
    children = [fold_child(i) for i in range(count)]
    what = f"cross-validation folds 0..{count - 1} of seed {container.random_seed}"
    return _run_children(settings, container, children, what)
