"""The job side of an Azure ML run: `himl run --spec-env HIML_RUN_SPEC --input NAME=PATH ...`.

Real `himl run` processes with HelloWorld run specs, as the command of an Azure ML job starts
them (``backends/azureml/jobs.py``): the spec from an environment variable, the job's inputs
(datasets, the checkpoint) as ``--input``, the run recorded into the job's own run, and the
checkpoint files listed in tag ``himl.checkpoints``.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import TrainedRun, all_runs, mlflow_client, run_cli_subprocess
from test_run_spec import make_spec

from himl_manifest import records as protocol
from himl_manifest.cli.main import cli, run_cli
from himl_manifest.errors import UsageError
from himl_manifest.runner import tracking
from himl_manifest.runner.settings import from_run_spec, parse_inputs

HIML = "himl_manifest.cli.main"
SPEC_ENV = "HIML_RUN_SPEC"
QUICK = {"max_epochs": 1, "limit_train_batches": 4, "num_sanity_val_steps": 0}
#: Not inside Azure ML unless a test says so.
NOT_AZUREML = {"AZUREML_RUN_ID": "", "AZUREML_ARM_WORKSPACE_NAME": "", "MLFLOW_RUN_ID": ""}


def _uri() -> str:
    return os.environ["MLFLOW_TRACKING_URI"]


def _himl_run(project: Path, args: list[str], env: dict[str, str]) -> Any:
    return run_cli_subprocess([HIML, "run", *args], project, env={**NOT_AZUREML, **env})


def _resolved_fields(folder: Path) -> dict[str, Any]:
    return dict(json.loads((folder / "run_spec.json").read_text())["resolved"]["fields"])


# --- the spec from an environment variable; the job's own run; himl.checkpoints -------------


@pytest.mark.slow
def test_spec_from_env_records_into_the_jobs_run_with_its_checkpoints(project: Path) -> None:
    """As in an Azure ML job: the spec in HIML_RUN_SPEC, AZUREML_RUN_ID naming the job's run
    (the job name is the run id; no MLFLOW_RUN_ID), MLflow pointed at the store."""
    client = mlflow_client(_uri())
    job_run = client.create_run(client.create_experiment("hello")).info.run_id
    spec = make_spec(trainer=QUICK)
    done = _himl_run(
        project,
        ["--spec-env", SPEC_ENV, "--output-dir", "outputs"],
        {SPEC_ENV: spec.to_json(), "AZUREML_RUN_ID": job_run},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = all_runs(_uri())  # recorded into the job's run: no other was created
    assert run.info.run_id == job_run
    folder = project / "outputs"
    tags = run.data.tags
    assert tags[protocol.TAG_RUN_NAME] == spec.run_name
    assert tags[protocol.TAG_OUTPUT_DIR] == str(folder)
    assert "test_mse" in run.data.metrics
    assert tags[protocol.TAG_CHECKPOINTS] == "checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt"
    for name in tags[protocol.TAG_CHECKPOINTS].split(","):
        assert (folder / name).is_file()
    # the service owns the job's status: the runner neither started nor ended the run
    assert run.info.status == "RUNNING" and not run.info.end_time


@pytest.mark.slow
def test_a_local_run_spec_from_env_records_himl_checkpoints(project: Path) -> None:
    spec = make_spec(trainer=QUICK)
    done = _himl_run(
        project, ["--spec-env", SPEC_ENV, "--output-dir", "out"], {SPEC_ENV: spec.to_json()}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = all_runs(_uri())
    assert run.info.status == "FINISHED"
    assert run.data.tags[protocol.TAG_CHECKPOINTS] == (
        "checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt"
    )
    assert f"run id: {run.info.run_id}" in done.stdout


# --- inputs ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_checkpoint_input_is_the_checkpoint_of_an_inference_run(
    project: Path, trained: TrainedRun
) -> None:
    """The job's ``checkpoint`` input (the file the service downloaded) replaces the spec's run
    reference, which this store could not resolve."""
    downloaded = project / "inputs" / "checkpoint" / "last.ckpt"
    downloaded.parent.mkdir(parents=True)
    shutil.copyfile(trained.last, downloaded)
    spec = make_spec(
        mode="inference",
        trainer={"num_sanity_val_steps": 0},
        checkpoint={"source": {"run": "upstream-s0-00000000:last.ckpt"}},
    )
    done = _himl_run(
        project,
        ["--spec-env", SPEC_ENV, "--output-dir", "out", "--input", f"checkpoint={downloaded}"],
        {SPEC_ENV: spec.to_json()},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folder = project / "out"
    assert _resolved_fields(folder)["src_checkpoint"] == str(downloaded)
    summary = json.loads((folder / "run_spec.json").read_text())["resolved"]
    assert summary["mode"] == "inference" and str(downloaded) in summary["checkpoint"]
    (run,) = all_runs(_uri())
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_mse"] == pytest.approx(trained.metrics["test_mse"], rel=1e-6)
    assert run.data.tags[protocol.TAG_CHECKPOINTS] == ""  # inference writes no checkpoint


@pytest.mark.slow
def test_dataset_input_replaces_the_azure_datasets_path(project: Path) -> None:
    """``dataset_0`` is where the service put the first Azure dataset: the container reads it
    as its local dataset (HelloWorld's ``local_dataset`` is its CSV)."""
    mounted = project / "mnt" / "hello.csv"
    mounted.parent.mkdir()
    shipped = resources.files("himl_manifest.configs").joinpath("hello_world.csv")
    mounted.write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    spec = make_spec(trainer=QUICK, datasets=[{"azure": "hello:1"}, {"local": "data/extra"}])
    done = _himl_run(
        project,
        ["--spec-env", SPEC_ENV, "--output-dir", "out", "--input", f"dataset_0={mounted}"],
        {SPEC_ENV: spec.to_json(), tracking.TRACKING_ENV: "off"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fields = _resolved_fields(project / "out")
    assert fields["azure_datasets"] == ["hello:1"]
    assert fields["local_datasets"] == [str(mounted), str(project / "data" / "extra")]


def test_dataset_inputs_follow_the_azure_datasets_in_manifest_order(project: Path) -> None:
    spec = make_spec(
        datasets=[
            {"local": "data/only-local"},
            {"datastore": "ds", "path": "a/b", "local": "data/ab"},
            {"azure": "panda:3"},
        ]
    )
    plain = from_run_spec(spec, root=project).overrides
    assert plain["azure_datasets"] == ["ds/a/b", "panda:3"]  # dataset_0, dataset_1
    inputs = parse_inputs(["dataset_1=/mnt/panda", "dataset_0=/mnt/ab"], spec.spec)
    o = from_run_spec(spec, root=project, inputs=inputs).overrides
    assert o["local_datasets"] == ["/mnt/ab", "/mnt/panda", str(project / "data" / "only-local")]
    # a dataset without a folder and without a local copy cannot be skipped
    with pytest.raises(UsageError, match="--input dataset_1=PATH"):
        from_run_spec(spec, root=project, inputs={"dataset_0": "/mnt/ab"})
    # its local copy stands in when only the other one is mounted
    o = from_run_spec(spec, root=project, inputs={"dataset_1": "/mnt/panda"}).overrides
    assert o["local_datasets"][:2] == [str(project / "data" / "ab"), "/mnt/panda"]


def test_checkpoint_input_replaces_resume_from_and_url_sources(project: Path) -> None:
    spec = make_spec(checkpoint={"source": {"url": "https://e.org/m.ckpt", "sha256": "a" * 64}})
    resumed = type(spec)(**{**spec.__dict__, "resume_from": "hello-s0-aaaaaaaa"})
    o = from_run_spec(resumed, root=project, inputs={"checkpoint": "in/last.ckpt"}).overrides
    assert o["src_checkpoint"] == str(project / "in" / "last.ckpt")
    assert o["resume_training"] is True and "src_checkpoint_sha256" not in o


def test_input_names_are_the_jobs_input_names() -> None:
    from himl_manifest.backends.azureml import jobs

    spec = make_spec(datasets=[{"azure": "a"}, {"datastore": "ds", "path": "p"}, {"local": "x"}])
    command = jobs.job_command(jobs.dataset_inputs(spec.spec))
    assert command.startswith(f"python -m {HIML} run --spec-env {SPEC_ENV} --output-dir outputs")
    names = [part.split("=")[0] for part in command.split("--input ")[1:]]
    assert parse_inputs([f"{n}=/x" for n in names], spec.spec).keys() == set(names)


# --- usage errors ------------------------------------------------------------------------------


def _usage_error(project: Path, args: list[str], env: dict[str, str] | None = None) -> str:
    done = _himl_run(project, args, env or {})
    assert done.returncode == UsageError.exit_code, done.stderr[-3000:]
    return str(done.stderr)


@pytest.mark.slow
def test_usage_errors_in_a_fresh_process(project: Path) -> None:
    spec = make_spec()
    (project / "spec.json").write_text(spec.to_json())
    env = {SPEC_ENV: spec.to_json()}
    both = _usage_error(project, ["spec.json", "--spec-env", SPEC_ENV], env)
    assert "not both" in both
    assert "no run spec" in _usage_error(project, [])
    unknown = _usage_error(project, ["--spec-env", SPEC_ENV, "--input", "datset_0=/mnt/x"], env)
    assert "unknown input" in unknown and "datset_0" in unknown
    assert not (project / "outputs").exists() and not all_runs(_uri())


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["spec.json", "--spec-env", SPEC_ENV], True, "not both"),
        ([], False, "no run spec: give SPEC_FILE or --spec-env NAME"),
        (["--spec-env", SPEC_ENV], False, "HIML_RUN_SPEC: the environment variable is not set"),
        (["spec.json", "--input", "dataset_0=/mnt/x"], False, "unknown input"),
        (["spec.json", "--input", "model=/mnt/x"], False, "unknown input"),
        (["spec.json", "--input", "checkpoint"], False, "expected NAME=PATH"),
        (["spec.json", "--input", "checkpoint=a", "--input", "checkpoint=b"], False, "twice"),
        (["spec.json", "--input", "checkpoint="], False, "empty path"),
    ],
)
def test_usage_errors(
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    env: bool,
    message: str,
) -> None:
    spec = make_spec()
    (project / "spec.json").write_text(spec.to_json())
    if env:
        monkeypatch.setenv(SPEC_ENV, spec.to_json())
    else:
        monkeypatch.delenv(SPEC_ENV, raising=False)
    assert run_cli(cli, ["run", *args]) == UsageError.exit_code
    assert message in capsys.readouterr().err
    assert not (project / "outputs").exists()


# --- the listing itself -------------------------------------------------------------------------


def test_checkpoint_listing(tmp_path: Path) -> None:
    assert tracking.checkpoint_listing(tmp_path) == ""
    folder = tmp_path / "checkpoints"
    (folder / "sub").mkdir(parents=True)
    for name in ("best_val_loss.ckpt", "last.ckpt", ".last.ckpt.partial", "sub/epoch=1.ckpt"):
        (folder / name).write_bytes(b"x")
    (folder / "notes.txt").write_text("not a checkpoint")
    assert tracking.checkpoint_listing(tmp_path) == (
        "checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt,checkpoints/sub/epoch=1.ckpt"
    )
    # capped by whole names
    limit = len("checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt") + 3
    assert tracking.checkpoint_listing(tmp_path, limit=limit) == (
        "checkpoints/last.ckpt,checkpoints/best_val_loss.ckpt"
    )


def test_job_run_id_inside_azureml(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_RUN_ID", "AZUREML_RUN_ID", "AZUREML_ARM_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert tracking.existing_run_id() is None
    monkeypatch.setenv("AZUREML_RUN_ID", "hello-s0-12345678")
    assert tracking.existing_run_id() == "hello-s0-12345678"
    monkeypatch.setenv("MLFLOW_RUN_ID", "from-mlflow")
    assert tracking.existing_run_id() == "from-mlflow"
