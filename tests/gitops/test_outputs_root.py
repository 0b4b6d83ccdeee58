"""The project's outputs root: ``outputs:`` in ``himl.yaml`` or
``$HIML_OUTPUTS``, used by apply's jobs and by `himl-runner` alike, with one run-folder naming
scheme (``<timestamp>_<run name>``)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gitops_helpers import git

from himl_manifest.errors import ConfigError
from himl_manifest.records import OUTPUTS_ENV, outputs_root

BIN = Path(sys.executable).parent
FOLDER = re.compile(r"^\d{4}-\d\d-\d\dT\d{6}\.\d{6}Z_(.+)$")


def test_default_is_outputs_in_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OUTPUTS_ENV, raising=False)
    assert outputs_root(tmp_path) == tmp_path.resolve() / "outputs"


def test_settings_file_relative_absolute_and_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(OUTPUTS_ENV, raising=False)
    settings = tmp_path / "himl.yaml"
    settings.write_text("outputs: ../runs\n")
    assert outputs_root(tmp_path) == tmp_path.resolve() / "../runs"
    settings.write_text(f"outputs: {tmp_path / 'abs'}\n")
    assert outputs_root(tmp_path) == tmp_path / "abs"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings.write_text("outputs: ~/runs\n")
    assert outputs_root(tmp_path) == tmp_path / "home" / "runs"
    monkeypatch.setenv(OUTPUTS_ENV, str(tmp_path / "env"))  # the variable wins
    assert outputs_root(tmp_path) == tmp_path / "env"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("outputs: [a, b]\n", "must be a folder path"),
        ("outputs: ''\n", "must be a folder path"),
        ("output: runs\n", "unknown setting(s) output"),
        ("- runs\n", "expected a mapping"),
        ("outputs: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_settings_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, message: str
) -> None:
    monkeypatch.delenv(OUTPUTS_ENV, raising=False)
    (tmp_path / "himl.yaml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)) as caught:
        outputs_root(tmp_path)
    assert "himl.yaml" in str(caught.value)


def _run(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", OUTPUTS_ENV, "PYTEST_XDIST_WORKER")
    }
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done


@pytest.mark.slow
def test_apply_and_the_runner_write_under_the_projects_outputs_root(
    git_repo: Path, empty_store: Path
) -> None:
    repo = git_repo
    _run(repo, "himl", "init")
    manifest = repo / "experiments/hello-world.yaml"
    manifest.write_text(manifest.read_text().replace("max_epochs: 5", "max_epochs: 1"))
    (repo / "himl.yaml").write_text("outputs: ../shared-runs\n")
    shutil.copy(empty_store, repo / "mlflow.db")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "init, outputs outside the checkout")
    _run(repo, "himl", "apply", "--yes")
    _run(repo, "himl-runner", "--model=HelloWorld", "--max_epochs=1", "--limit_train_batches=4")

    shared = repo.parent / "shared-runs"
    names = sorted(FOLDER.match(p.name).group(1) for p in shared.iterdir())  # type: ignore[union-attr]
    assert len(names) == 3
    assert sum(name.startswith("hello-world-s") for name in names) == 2  # apply's jobs
    # the runner's one-off run: the same scheme, named after its container (the reference's
    # `outputs/<timestamp>_<ContainerName>`)
    assert "HelloWorld" in names
    assert not (repo / "outputs").exists()
    # the runs know where they are: plan is clean, and the runs list their folders there
    assert _run(repo, "himl", "plan").stdout.strip() == "No changes."
    assert "shared-runs" in _run(repo, "himl", "runs", "--format", "json").stdout
