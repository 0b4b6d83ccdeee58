"""The pretrained HelloWorld checkpoint shipped in the package: hi-ml's "run inference with a
pretrained model", runnable offline, reproducing the recorded test MSE exactly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from runner_helpers import run_cli_subprocess

from himl_manifest.configs.hello_world import PRETRAINED_CHECKPOINT, PRETRAINED_METRICS

REPO_ROOT = Path(__file__).resolve().parents[2]


def _recorded() -> dict[str, object]:
    record: dict[str, object] = json.loads(PRETRAINED_METRICS.read_text(encoding="utf-8"))
    return record


def test_the_shipped_checkpoint_is_small_plain_data_and_the_recorded_file() -> None:
    import torch

    assert PRETRAINED_CHECKPOINT.stat().st_size < 16_000
    assert hashlib.sha256(PRETRAINED_CHECKPOINT.read_bytes()).hexdigest() == _recorded()["sha256"]
    data = torch.load(PRETRAINED_CHECKPOINT, map_location="cpu", weights_only=True)
    assert set(data["state_dict"]) == {"model.weight", "model.bias"}
    assert "callbacks" not in data  # no paths of the machine that made it


@pytest.mark.slow
def test_inference_with_the_shipped_checkpoint_reproduces_its_test_mse(project: Path) -> None:
    done = run_cli_subprocess(
        [
            "himl_manifest.runner.cli",
            "--model=HelloWorld",
            "--run_inference_only",
            f"--src_checkpoint={PRETRAINED_CHECKPOINT}",
            "--tracking_uri=none",
        ],
        project,
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (project / "outputs").iterdir()
    assert float((folder / "test_mse.txt").read_text()) == _recorded()["test_mse"]
    assert float((folder / "test_mae.txt").read_text()) == _recorded()["test_mae"]


@pytest.mark.slow
def test_the_wheel_ships_the_checkpoint_and_its_metrics(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run([*pip, "-w", str(tmp_path), str(REPO_ROOT)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("himl_manifest-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("himl_manifest/configs/hello_world.ckpt")
        metrics = archive.read("himl_manifest/configs/hello_world_checkpoint.json")
    assert shipped == PRETRAINED_CHECKPOINT.read_bytes()
    assert metrics == PRETRAINED_METRICS.read_bytes()
