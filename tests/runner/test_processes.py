"""The real entry points in fresh processes: `himl run`, `--different_seeds`, DDP on CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runner_helpers import FAST, all_runs, mlflow_client, run_cli_subprocess
from test_run_spec import make_spec

pytestmark = pytest.mark.slow

RUNNER = "himl_manifest.runner.cli"
HIML = "himl_manifest.cli.main"


def _uri() -> str:
    return os.environ["MLFLOW_TRACKING_URI"]


def test_himl_run_logs_into_the_precreated_run(project: Path) -> None:
    client = mlflow_client(_uri())
    run_id = client.create_run(client.create_experiment("hello")).info.run_id
    spec = make_spec(trainer={"max_epochs": 1, "limit_train_batches": 4, "num_sanity_val_steps": 0})
    (project / "spec.json").write_text(spec.to_json())
    done = run_cli_subprocess(
        [HIML, "run", "spec.json", "--output-dir", "outputs/fixed"],
        project,
        env={"MLFLOW_RUN_ID": run_id},
    )
    assert done.returncode == 0, done.stderr
    (run,) = all_runs(_uri())
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    folder = project / "outputs" / "fixed"
    assert run.data.tags["himl.output_dir"] == str(folder)
    assert run.data.tags["himl.run_name"] == spec.run_name
    assert "test_mse" in run.data.metrics
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert '"himl-runspec/v1"' in (folder / "run_spec.json").read_text()


def test_different_seeds_run_in_parallel_processes(project: Path) -> None:
    done = run_cli_subprocess(
        [RUNNER, "--model=HelloWorld", "--max_epochs=1", "--different_seeds=2", "--jobs=2", *FAST],
        project,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "seed 0: run folder:" in done.stdout and "seed 1: run folder:" in done.stdout
    assert "[seed 1]" in done.stderr
    assert len(list((project / "outputs").iterdir())) == 2
    runs = all_runs(_uri())
    assert sorted(r.data.tags["mlflow.runName"] for r in runs) == [
        "HelloWorld-s0",
        "HelloWorld-s1",
    ]
    assert sorted(r.data.params["random_seed"] for r in runs) == ["0", "1"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert not (project / "lightning_logs").exists()


def _check_one_ddp_run(project: Path, folder: Path) -> None:
    (run,) = all_runs(_uri())
    assert run.info.status == "FINISHED"
    assert run.data.tags["himl.output_dir"] == str(folder)
    assert run.data.params["devices"] == "2"
    assert {p.name for p in (folder / "checkpoints").iterdir()} == {
        "last.ckpt",
        "best_val_loss.ckpt",
    }
    assert [p.name for p in (project / "outputs").iterdir()] == [folder.name]


def test_ddp_on_cpu_with_himl_runner(project: Path) -> None:
    done = run_cli_subprocess(
        [RUNNER, "--model=HelloWorld", "--accelerator=cpu", "--devices=2", "--max_epochs=2", *FAST],
        project,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (project / "outputs").iterdir()
    _check_one_ddp_run(project, folder)
    assert done.stdout.count("run folder:") == 1


def test_ddp_on_cpu_with_himl_run(project: Path) -> None:
    spec = make_spec(
        trainer={"accelerator": "cpu", "devices": 2, "max_epochs": 1, "limit_train_batches": 4}
    )
    (project / "spec.json").write_text(spec.to_json())
    done = run_cli_subprocess([HIML, "run", "spec.json"], project)
    assert done.returncode == 0, done.stderr[-3000:]
    (folder,) = (project / "outputs").iterdir()
    assert folder.name.endswith("_" + spec.run_name)
    _check_one_ddp_run(project, folder)
