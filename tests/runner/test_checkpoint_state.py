"""Nothing lost on a restart: ``last.ckpt`` every epoch, replaced atomically; recovery only from
the run's own recovery checkpoints; the metrics of every start of a run kept."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from runner_helpers import FAST, TrainedRun, run_flags

from himl_manifest.runner.checkpoints import epochs_done, recovery_checkpoint

SPY = """
import json, os
from pathlib import Path

from pytorch_lightning import Callback

from himl_manifest.configs.hello_world import HelloWorld


class EpochSpy(Callback):
    '''At the start of each training epoch, notes what last.ckpt holds (and its inode).'''

    def on_train_epoch_start(self, trainer, pl_module):
        last = Path("checkpoints") / "last.ckpt"
        seen = None
        if last.is_file():
            import torch

            state = torch.load(last, map_location="cpu", weights_only=False)
            seen = [state["epoch"], os.stat(last).st_ino]
            if trainer.current_epoch == 2:  # what a kill -9 during epoch 2 leaves behind
                import shutil

                shutil.copy(last, "killed_in_epoch_2.ckpt")
        with open("spy.jsonl", "a") as out:
            out.write(json.dumps([trainer.current_epoch, seen]) + "\\n")


class Spied(HelloWorld):
    def get_callbacks(self):
        return [EpochSpy()]
"""


def test_last_checkpoint_is_written_every_epoch_by_an_atomic_rename(
    project: Path, package: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsspec (Lightning's own save) writes in the temporary folder and moves the file into
    # place: on another file system that is a copy over the old checkpoint, in place
    other_fs = Path("/dev/shm")
    if other_fs.is_dir() and os.stat(other_fs).st_dev != os.stat(project).st_dev:
        monkeypatch.setattr(tempfile, "tempdir", str(other_fs))
    package("hs_spy", {"spy.py": SPY})
    folder = project / "run"
    run_flags("--model=hs_spy.spy.Spied", "--max_epochs=4", f"--output_dir={folder}", *FAST)
    seen = [json.loads(line) for line in (folder / "spy.jsonl").read_text().splitlines()]
    assert [epoch for epoch, _ in seen] == [0, 1, 2, 3]
    assert seen[0][1] is None
    assert [s[0] for _, s in seen[1:]] == [0, 1, 2]  # the epoch before, every time
    inodes = [s[1] for _, s in seen[1:]]
    assert len(set(inodes)) == len(inodes)  # a new file renamed over the old, never rewritten
    assert epochs_done(torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)) == 4
    assert sorted(p.name for p in (folder / "checkpoints").iterdir()) == [
        "best_val_loss.ckpt",
        "last.ckpt",
    ]
    # the restart of a run killed during epoch 2 continues with epoch 2, not from the start
    restarted = project / "restarted"
    (restarted / "checkpoints").mkdir(parents=True)
    shutil.copy(folder / "killed_in_epoch_2.ckpt", restarted / "checkpoints" / "last.ckpt")
    (result,) = run_flags(
        "--model=hs_spy.spy.Spied", "--max_epochs=4", f"--output_dir={restarted}", *FAST
    )
    assert result.checkpoint == str(restarted / "checkpoints" / "last.ckpt")
    lines = (restarted / "spy.jsonl").read_text().splitlines()
    assert [json.loads(line)[0] for line in lines] == [2, 3]


def _with_epochs(source: Path, target: Path, done: int) -> Path:
    state = torch.load(source, map_location="cpu", weights_only=False)
    state["epoch"] = done - 1
    state["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"] = done
    torch.save(state, target)
    return target


def test_recovery_uses_only_the_runs_own_last_checkpoints(
    tmp_path: Path, trained: TrainedRun
) -> None:
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    assert recovery_checkpoint(folder) is None
    _with_epochs(trained.last, folder / "best_val_loss.ckpt", 50)
    _with_epochs(trained.last, folder / "pretrained.ckpt", 80)
    assert recovery_checkpoint(folder) is None  # never an unrelated *.ckpt
    last = _with_epochs(trained.last, folder / "last.ckpt", 12)
    assert recovery_checkpoint(folder) == last
    newer = _with_epochs(trained.last, folder / "last-v1.ckpt", 40)
    assert recovery_checkpoint(folder) == newer  # the most epochs done, not the plain name
    broken = folder / "last-v2.ckpt"
    broken.write_bytes(newer.read_bytes()[:100])  # a write killed half way (older versions)
    (folder / ".last.ckpt.partial").write_bytes(b"partial")
    assert recovery_checkpoint(folder) == newer


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _epochs(path: Path) -> set[int]:
    return {int(row["epoch"]) for row in _rows(path) if row.get("epoch")}


def test_a_restarted_run_keeps_the_metrics_of_its_earlier_starts(project: Path) -> None:
    folder = project / "restarted"
    run_flags("--model=HelloWorld", "--max_epochs=2", f"--output_dir={folder}", *FAST)
    first = _rows(folder / "metrics.csv")
    assert {0, 1} <= _epochs(folder / "metrics.csv")
    run_flags("--model=HelloWorld", "--max_epochs=3", f"--output_dir={folder}", *FAST)
    assert _rows(folder / "metrics-1.csv") == first
    second = _rows(folder / "metrics.csv")
    assert min(_epochs(folder / "metrics.csv")) == 2  # the restart's own rows only
    run_flags("--model=HelloWorld", "--max_epochs=4", f"--output_dir={folder}", *FAST)
    assert _rows(folder / "metrics-1.csv") == first
    assert _rows(folder / "metrics-2.csv") == second
    assert min(_epochs(folder / "metrics.csv")) == 3
