"""Run folders, the runner's log file, the summary files, and which process writes them.

Local runs write into ``<project root>/outputs/<UTC timestamp>_<name>/`` (microsecond timestamp,
created with an exclusive mkdir, so two runs never share a folder); inside Azure ML the run
folder is ``./outputs`` (uploaded) and the log goes to ``./logs`` (streamed). Under DDP the
first process chooses the folder and hands it to the processes Lightning starts through
:data:`RUN_DIR_ENV`; only global rank 0 writes summaries and talks to the run store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from himl_manifest import paths
from himl_manifest.records import (
    CHECKPOINT_DIR,
    LOG_CAPTURED_ENV,
    OUTPUTS_DIR,
    RUN_SPEC_FILE,
    SUMMARY_FILE,
    outputs_root,
    run_folder_name,
)

#: Set by the first process for the DDP processes Lightning launches: the shared run folder.
RUN_DIR_ENV = "HIML_RUN_DIR"
#: Set likewise: the working directory the command was started in (children start there).
LAUNCH_CWD_ENV = "HIML_LAUNCH_CWD"
#: Set likewise: the resolved checkpoint file (so children do not resolve or download again).
CHECKPOINT_ENV = "HIML_RESOLVED_CHECKPOINT"
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


@dataclass(frozen=True)
class RunFolders:
    """Where one run writes: its outputs (the working directory) and its log file."""

    outputs: Path
    logs: Path

    @property
    def checkpoints(self) -> Path:
        return self.outputs / CHECKPOINT_DIR


def is_rank_zero() -> bool:
    """True in the process that owns the run: global rank 0 (or no distributed launch)."""
    return all(int(os.environ.get(v, "0") or 0) == 0 for v in _RANK_VARIABLES)


def is_ddp_child() -> bool:
    """True in a process that Lightning launched for DDP from a runner process."""
    return not is_rank_zero() and bool(os.environ.get(RUN_DIR_ENV))


def enter_launch_cwd() -> None:
    """In a DDP child, go back to the folder the command was started in (Lightning starts
    children in the parent's current folder, which is the run folder while it trains)."""
    launch_cwd = os.environ.get(LAUNCH_CWD_ENV)
    if launch_cwd and is_ddp_child():
        os.chdir(launch_cwd)
    if sys.argv and sys.argv[0] and os.path.isfile(sys.argv[0]):
        sys.argv[0] = os.path.abspath(sys.argv[0])


def _new_folder(parent: Path, name: str) -> Path:
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        folder = parent / run_folder_name(name)
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def make_run_folders(name: str, explicit: Path | None = None) -> RunFolders:
    """Create (rank 0) or find (DDP children) the folders of a run."""
    shared = os.environ.get(RUN_DIR_ENV)
    if shared and not is_rank_zero():
        return RunFolders(Path(shared), Path(shared))
    if explicit is not None:
        explicit = explicit.resolve()
        explicit.mkdir(parents=True, exist_ok=True)
        return RunFolders(explicit, explicit)
    if paths.in_azureml():
        folders = azureml_folders()
        folders.outputs.mkdir(exist_ok=True)
        folders.logs.mkdir(exist_ok=True)
        return folders
    root = paths.project_root()
    # Started inside an outputs folder (no repository above): run folders go there, never
    # into outputs/outputs.
    inside = root.name == OUTPUTS_DIR and not (root / ".git").exists()
    parent = root if inside else outputs_root(root)
    folder = _new_folder(parent, name)
    return RunFolders(folder, folder)


def azureml_folders() -> RunFolders:
    """Inside Azure ML: ``./outputs`` (uploaded) and ``./logs`` (streamed) - or, when the
    working directory already is ``outputs``, that folder itself and ``logs`` beside it."""
    cwd = Path.cwd().resolve()
    outputs = cwd if cwd.name == OUTPUTS_DIR else cwd / OUTPUTS_DIR
    return RunFolders(outputs, outputs.parent / "logs")


@contextlib.contextmanager
def working_directory(folder: Path) -> Iterator[None]:
    """Run the block in ``folder``; always come back."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the block; restore the previous values after."""
    previous = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LIGHTNING_LOGGERS = (
    "pytorch_lightning",
    "lightning_fabric",
    "lightning.pytorch",
    "lightning.fabric",
)


class _DropLightningTips(logging.Filter):
    """Drops Lightning's advertising tips (they are not about the run)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


@contextlib.contextmanager
def run_log(log_file: Path | None, level: str) -> Iterator[None]:
    """Send the runner's and Lightning's log records to stderr and to ``log_file``."""
    numeric = logging.getLevelName(level.upper())
    numeric = numeric if isinstance(numeric, int) else logging.INFO
    console = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [console]
    if log_file is not None and os.environ.get(LOG_CAPTURED_ENV) != "1":
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(logging.Formatter(_LOG_FORMAT))
        handler.setLevel(numeric)
    own = logging.getLogger("himl_manifest")
    # Lightning prints to the console itself: its records only go to the file as well.
    attached = [(own, h) for h in handlers] + [
        (logging.getLogger(name), h) for name in _LIGHTNING_LOGGERS for h in handlers[1:]
    ]
    noise = _DropLightningTips()
    for name in _LIGHTNING_LOGGERS:
        logging.getLogger(f"{name}.utilities.rank_zero").addFilter(noise)
    saved_level, saved_propagate = own.level, own.propagate
    own.setLevel(numeric)
    own.propagate = False
    for target, handler in attached:
        target.addHandler(handler)
    try:
        yield
    finally:
        for target, handler in attached:
            target.removeHandler(handler)
        for name in _LIGHTNING_LOGGERS:
            logging.getLogger(f"{name}.utilities.rank_zero").removeFilter(noise)
        own.setLevel(saved_level)
        own.propagate = saved_propagate
        for handler in handlers:
            handler.close()


def log_tail(log_file: Path | None, lines: int = 40) -> str:
    """The last ``lines`` lines of the log (what a failed run records as its error tail)."""
    if log_file is None or not log_file.is_file():
        return ""
    text = log_file.read_text(encoding="utf-8", errors="replace")
    return "\n".join(text.splitlines()[-lines:])


def write_summary(folder: Path, values: Mapping[str, Any], header: Mapping[str, str]) -> None:
    """``experiment_summary.txt``: what ran, then every container field and its value."""
    lines = [f"{key}: {value}" for key, value in header.items()]
    lines.append("")
    width = max((len(k) for k in values), default=0)
    lines += [f"{name:<{width}} = {value!r}" for name, value in sorted(values.items())]
    (folder / SUMMARY_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_run_spec(folder: Path, spec: Mapping[str, Any]) -> None:
    """``run_spec.json``: the run spec as given, with the resolved settings, beside its outputs
    (the file a local executor handed the job, rewritten with a ``resolved`` section)."""
    text = json.dumps(spec, indent=2, sort_keys=True, default=str)
    (folder / RUN_SPEC_FILE).write_text(text + "\n", encoding="utf-8")
