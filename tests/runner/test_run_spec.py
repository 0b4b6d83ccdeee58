"""`himl run SPEC_FILE`: run specs become the same settings `himl-runner` flags do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runner_helpers import all_runs, mlflow_client

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.manifest.build import normalize
from himl_manifest.runner.settings import EVALUATION, TRAIN, from_run_spec
from himl_manifest.spec import RunSpec, seed_spec

FAILING = """
import torch
from himl_manifest.configs.hello_world import HelloWorld, HelloRegression

class Exploding(HelloRegression):
    def training_step(self, batch, batch_idx):
        raise RuntimeError("boom in training_step")

class Failing(HelloWorld):
    def create_model(self):
        return Exploding()
"""


def make_spec(seed: int = 0, run_name: str = "hello-s0-12345678", **manifest: Any) -> RunSpec:
    document = {"apiVersion": "himl/v1", "kind": "Experiment", "name": "hello"}
    document.update({"container": "HelloWorld", **manifest})
    spec = seed_spec(normalize(document), seed)
    return RunSpec("hello", seed, spec, "v1:" + "0" * 64, run_name)


def test_spec_fields_become_overrides(project: Path) -> None:
    run = make_spec(
        seed=3,
        trainer={"max_epochs": 4, "devices": 1, "limit_train_batches": 0.5},
        params={"learning_rate": 0.05},
        tracking={"experiment": "exp", "display_name": "base"},
        datasets=[{"local": "data/x"}, {"azure": "panda:3", "mountpoint": "/mnt/p"}],
        checkpoint={"source": {"url": "https://e.org/m.ckpt", "sha256": "a" * 64}},
        runner={"log_level": "DEBUG"},
        compute={"num_nodes": 2},
        tags={"team": "x"},
    )
    settings = from_run_spec(run, root=project)
    o = settings.overrides
    assert (o["max_epochs"], o["devices"], o["learning_rate"], o["random_seed"]) == (4, 1, 0.05, 3)
    assert (
        o["experiment"] == "exp" and o["tag"] == "base"
    )  # the display name: run names carry the seed
    assert o["local_datasets"] == [str(project / "data" / "x")]
    assert o["azure_datasets"] == ["panda:3"] and o["dataset_mountpoints"] == ["/mnt/p"]
    assert o["src_checkpoint"] == "https://e.org/m.ckpt" and o["src_checkpoint_sha256"] == "a" * 64
    assert (settings.mode, settings.log_level, settings.num_nodes) == (TRAIN, "DEBUG", 2)
    assert settings.tags["team"] == "x" and settings.run_name == run.run_name
    assert settings.source["format"] == "himl-runspec/v1"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ({"run": "up-s0-1:best_val_loss.ckpt"}, "up-s0-1:best_val_loss.ckpt"),
        (
            {"experiment": "up", "seed": 0, "file": "best_val_loss.ckpt", "run": "up-s0-1"},
            "up-s0-1:best_val_loss.ckpt",
        ),
    ],
)
def test_checkpoint_sources(project: Path, source: dict[str, Any], expected: str) -> None:
    settings = from_run_spec(make_spec(checkpoint={"source": source}), root=project)
    assert settings.overrides["src_checkpoint"] == expected


def test_modes_and_resume_from(project: Path) -> None:
    inference = from_run_spec(make_spec(mode="inference"), root=project)
    assert inference.overrides["run_inference_only"] is True
    assert from_run_spec(make_spec(mode="evaluation"), root=project).mode == EVALUATION
    run = make_spec()
    resumed = RunSpec(**{**run.__dict__, "resume_from": "hello-s0-aaaaaaaa"})
    o = from_run_spec(resumed, root=project).overrides
    assert (o["src_checkpoint"], o["resume_training"]) == ("hello-s0-aaaaaaaa", True)
    assert o["tag"] == run.run_name


def _precreate(uri: str) -> str:
    client = mlflow_client(uri)
    experiment = client.create_experiment("hello")
    run = client.create_run(experiment, tags={"himl.run_name": "hello-s0-12345678"})
    return str(run.info.run_id)


def test_failing_training_marks_the_precreated_run_failed(
    project: Path, package: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    package("rs_failing", {"models.py": FAILING})
    uri = str(project / "mlflow.db")
    run_id = _precreate(f"sqlite:///{uri}")
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    spec_file = project / "spec.json"
    spec_file.write_text(make_spec(container="rs_failing.Failing").to_json())
    assert run_cli(cli, ["run", str(spec_file), "--output-dir", "out"]) == 1
    (run,) = all_runs(f"sqlite:///{uri}")
    assert run.info.run_id == run_id
    assert run.info.status == "FAILED"
    assert "RuntimeError: boom in training_step" in run.data.tags["himl.error_tail"]
    assert run.data.tags["himl.output_dir"] == str(project / "out")
    assert "boom in training_step" in (project / "out" / "runner.log").read_text()


def test_invalid_spec_marks_the_precreated_run_failed(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"sqlite:///{project / 'mlflow.db'}"
    run_id = _precreate(uri)
    monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
    spec_file = project / "spec.json"
    spec_file.write_text(make_spec(params={"learning_rat": 1}).to_json())
    assert run_cli(cli, ["run", str(spec_file)]) == 1
    assert "did you mean 'learning_rate'" in capsys.readouterr().err
    (run,) = all_runs(uri)
    assert run.info.status == "FAILED"
    assert not (project / "outputs").exists()


def test_unsupported_spec_format(project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (project / "spec.json").write_text('{"format": "other"}')
    assert run_cli(cli, ["run", "spec.json"]) == 1
    assert "unsupported run spec format" in capsys.readouterr().err
