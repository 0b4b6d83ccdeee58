"""`himl logs RUN [--follow]` of local runs made by a real apply (the tiny real training): the
run folder's ``runner.log`` from the newest attempt's start, followed while the run trains."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from apply_helpers import (
    BOOM_MODULE,
    commit,
    env_for,
    himl,
    himl_command,
    runs_json,
    write_manifest,
)

pytestmark = pytest.mark.slow


def marker(run_name: str, attempt: int) -> str:
    return f"===== himl: attempt {attempt} of {run_name} ====="


def test_follow_a_training_run_to_its_end(repo: Path) -> None:
    write_manifest(repo)
    commit(repo, "one run")
    apply = subprocess.Popen(
        himl_command("apply", "--yes"),
        cwd=repo,
        env=env_for(repo),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        runs: list[dict[str, object]] = []
        while not runs and time.monotonic() < deadline and apply.poll() is None:
            runs = runs_json(repo)
            time.sleep(0.2)
        assert runs, "apply made no record"
        name = str(runs[0]["run_name"])
        assert runs[0]["status"] in ("queued", "running")  # caught while it trains
        followed = himl(repo, "logs", name, "--follow")
    finally:
        _, err = apply.communicate(timeout=180)
    assert apply.returncode == 0, err
    assert followed.returncode == 0, followed.stderr
    assert f"{name} attempt 1: completed" in followed.stderr
    assert "runner.log" in followed.stderr  # where the log is
    assert followed.stdout.startswith(marker(name, 1))
    whole = himl(repo, "logs", name)
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == followed.stdout  # followed to the very end
    log = Path(str(runs_json(repo)[0]["output_dir"])) / "runner.log"
    assert whole.stdout.rstrip("\n") == log.read_text(encoding="utf-8").rstrip("\n")
    assert len(whole.stdout.splitlines()) > 3  # the runner's own lines, not the marker alone


def test_the_newest_attempt_of_a_failed_run(repo: Path) -> None:
    package = repo / "configs_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "boom.py").write_text(BOOM_MODULE)
    write_manifest(repo, "boom", container="configs_test.boom.Boom")
    commit(repo, "a container that crashes")
    assert himl(repo, "apply", "--yes").returncode == 1
    assert himl(repo, "apply", "--yes", "--retry-failed").returncode == 1  # attempt 2
    (name,) = {str(r["run_name"]) for r in runs_json(repo)}
    shown = himl(repo, "logs", name)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith(marker(name, 2))
    assert marker(name, 1) not in shown.stdout  # the retry reused the folder: not its log
    assert "boom in training_step" in shown.stdout
    followed = himl(repo, "logs", name, "--follow")  # it ended: prints, and says how
    assert followed.returncode == 1
    assert followed.stdout == shown.stdout
    assert f"{name} attempt 2: failed" in followed.stderr


def test_an_unknown_run_is_an_error(repo: Path) -> None:
    done = himl(repo, "logs", "nope")
    assert done.returncode == 1
    assert "no managed run named 'nope'" in done.stderr
    assert "Traceback" not in done.stderr
