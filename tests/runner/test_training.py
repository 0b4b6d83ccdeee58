"""Real Lightning training on CPU: outputs, tracking, inference, evaluation, resume, seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from runner_helpers import FAST, TrainedRun, all_runs, mlflow_client, run_flags

from himl_manifest.errors import CheckpointError, ConfigError


def test_training_writes_the_run_folder_and_records_the_run(project: Path) -> None:
    (result,) = run_flags("--model=HelloWorld", "--max_epochs=2", "--tag=first", *FAST)
    folder = result.output_dir
    assert folder.parent == project / "outputs"
    assert folder.name.endswith("Z_HelloWorld")
    names = {p.name for p in folder.iterdir()}
    assert {"checkpoints", "run_spec.json", "experiment_summary.txt", "runner.log"} <= names
    assert {"metrics.csv", "test_mse.txt", "test_mae.txt"} <= names
    assert {p.name for p in (folder / "checkpoints").iterdir()} == {
        "last.ckpt",
        "best_val_loss.ckpt",
    }
    assert sorted(p.name for p in project.iterdir()) == [".git", "mlflow.db", "outputs"]
    summary = (folder / "experiment_summary.txt").read_text()
    assert "max_epochs" in summary and "random_seed" in summary
    spec = json.loads((folder / "run_spec.json").read_text())
    assert spec["resolved"]["fields"]["max_epochs"] == 2
    assert float((folder / "test_mse.txt").read_text()) == pytest.approx(result.metrics["test_mse"])

    (run,) = all_runs(str(_uri()))
    assert run.info.run_id == result.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["himl.output_dir"] == str(folder)
    assert run.data.tags["himl.container"] == "himl_manifest.configs.hello_world.HelloWorld"
    assert run.data.tags["mlflow.runName"] == "first"
    assert run.data.params["max_epochs"] == "2"
    assert {"loss", "val_loss", "test_mse", "test_mae"} <= set(run.data.metrics)
    history = mlflow_client(_uri()).get_metric_history(run.info.run_id, "val_loss")
    assert len(history) == 2  # one value per epoch
    experiment = mlflow_client(_uri()).get_experiment(run.info.experiment_id)
    assert experiment.name == "HelloWorld"


def _uri() -> str:
    import os

    return os.environ["MLFLOW_TRACKING_URI"]


def test_inference_only_reproduces_the_test_metric_exactly(
    project: Path, trained: TrainedRun
) -> None:
    (result,) = run_flags(
        "--model=HelloWorld", "--run_inference_only", f"--src_checkpoint={trained.last}"
    )
    assert result.mode == "inference"
    assert result.metrics["test_mse"] == trained.metrics["test_mse"]
    assert result.metrics["test_mae"] == trained.metrics["test_mae"]
    assert "val_loss" in result.metrics
    assert not (result.output_dir / "checkpoints" / "last.ckpt").exists()
    assert (result.output_dir / "test_mse.txt").is_file()


def test_eval_full_tests_the_checkpoint(project: Path, trained: TrainedRun) -> None:
    (result,) = run_flags(
        "--model=HelloWorld", "--mode=eval_full", f"--src_checkpoint={trained.last}"
    )
    assert result.mode == "evaluation"
    assert result.metrics["test_mse"] == trained.metrics["test_mse"]
    assert "val_loss" not in result.metrics


def test_plain_src_checkpoint_loads_the_weights(project: Path, trained: TrainedRun) -> None:
    (result,) = run_flags(
        "--model=HelloWorld", "--max_epochs=0", f"--src_checkpoint={trained.last}"
    )
    assert result.metrics["test_mse"] == trained.metrics["test_mse"]


def test_inference_or_resume_without_a_checkpoint_is_an_error(project: Path) -> None:
    with pytest.raises(CheckpointError, match="--run_inference_only needs a checkpoint"):
        run_flags("--model=HelloWorld", "--run_inference_only")
    with pytest.raises(CheckpointError, match="--resume_training needs a checkpoint"):
        run_flags("--model=HelloWorld", "--resume_training")
    assert not (project / "outputs").exists()


def test_resume_continues_in_a_new_run(project: Path, trained: TrainedRun) -> None:
    (result,) = run_flags(
        "--model=HelloWorld",
        "--resume_training",
        f"--src_checkpoint={trained.last}",
        "--max_epochs=3",
        *FAST,
    )
    assert result.output_dir != trained.output_dir
    resumed = torch.load(result.output_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["epoch"] == 3
    with open(result.output_dir / "metrics.csv", newline="") as handle:
        trained_epochs = {row["epoch"] for row in csv.DictReader(handle) if row["loss"]}
    assert trained_epochs == {"2"}  # only the new (third) epoch was trained


def test_resume_epoch_check_fails_before_training(project: Path, trained: TrainedRun) -> None:
    with pytest.raises(ConfigError) as error:
        run_flags(
            "--model=HelloWorld",
            "--resume_training",
            f"--src_checkpoint={trained.last}",
            "--max_epochs=1",
        )
    message = str(error.value)
    assert "completed 2 epochs" in message and "max_epochs is 1" in message
    assert not (project / "outputs").exists()
    assert all_runs(_uri()) == []


def test_restarted_run_resumes_from_its_own_checkpoint(project: Path, trained: TrainedRun) -> None:
    folder = project / "fixed"
    run_flags("--model=HelloWorld", "--max_epochs=1", f"--output_dir={folder}", *FAST)
    # The retry asks for other weights; its own newer checkpoint wins.
    (result,) = run_flags(
        "--model=HelloWorld",
        "--max_epochs=2",
        f"--output_dir={folder}",
        f"--src_checkpoint={trained.last}",
        *FAST,
    )
    assert result.output_dir == folder
    assert result.checkpoint == str(folder / "checkpoints" / "last.ckpt")
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)["epoch"] == 2
    assert "resuming from its own checkpoint" in (folder / "runner.log").read_text()


def _state(folder: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=False)
    return state["state_dict"]


def test_same_seed_gives_bit_identical_results(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIML_TRACKING", "off")
    flags = ("--model=HelloWorld", "--max_epochs=2", "--random_seed=7", *FAST)
    (first,) = run_flags(*flags)
    (second,) = run_flags(*flags)
    (other,) = run_flags(*flags[:2], "--random_seed=8", *FAST)
    assert first.metrics == second.metrics
    for key, tensor in _state(first.output_dir).items():
        assert torch.equal(tensor, _state(second.output_dir)[key])
    assert other.metrics != first.metrics
    assert first.run_id is None  # tracking off: nothing recorded
    assert all_runs(_uri()) == []


def test_hello_world_reaches_the_documented_test_mse(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIML_TRACKING", "off")
    (result,) = run_flags("--model=HelloWorld")
    assert result.metrics["test_mse"] == pytest.approx(0.0108, rel=0.10)
    assert result.metrics["test_mae"] == pytest.approx(0.083, rel=0.10)
