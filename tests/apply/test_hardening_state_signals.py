"""A cancelled CI job: SIGTERM to `himl apply` (and to its runs, as a CI runner signals the
whole process tree) ends every run it started as cancelled, and the next apply retries them."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from apply_helpers import commit, env_for, himl, himl_command, runs_json, write_manifest

pytestmark = pytest.mark.slow


def _training(repo: Path) -> Path | None:
    """The run folder once its first epoch's checkpoint is written (Lightning is training)."""
    for folder in (repo / "outputs").glob("*"):
        if (folder / "checkpoints" / "last.ckpt").is_file():
            return folder
    return None


@pytest.mark.parametrize("group", [True, False], ids=["process-group", "apply-only"])
def test_sigterm_cancels_the_runs_and_the_next_apply_retries_them(repo: Path, group: bool) -> None:
    trainer = {"max_epochs": 100000, "limit_train_batches": 1, "limit_val_batches": 1}
    write_manifest(repo, trainer={**trainer, "accelerator": "cpu"})
    commit(repo, "a long run")
    apply = subprocess.Popen(
        himl_command("apply", "--yes"),
        cwd=repo,
        env=env_for(repo),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert apply.stderr is not None
        seen = []
        for line in apply.stderr:  # the run started...
            seen.append(line)
            if " running " in line:
                break
        while _training(repo) is None:  # ...and trains (its first epoch is checkpointed)
            assert apply.poll() is None, "".join(seen)
            os.sched_yield()
        if group:
            os.killpg(apply.pid, signal.SIGTERM)
        else:
            os.kill(apply.pid, signal.SIGTERM)
        os.kill(apply.pid, signal.SIGTERM)  # signalled again: never cuts the cleanup short
        _, rest = apply.communicate(timeout=120)
    finally:
        if apply.poll() is None:
            os.killpg(apply.pid, signal.SIGKILL)
            apply.wait()
    assert apply.returncode == 130, "".join(seen) + rest
    (run,) = runs_json(repo)
    assert run["status"] == "cancelled", run
    assert run["error_tail"] == "interrupted: the apply stopped"
    planned = himl(repo, "plan")
    assert "Plan: 1 to retry." in planned.stdout + planned.stderr, planned.stdout
