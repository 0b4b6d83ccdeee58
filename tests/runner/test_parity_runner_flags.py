"""hi-ml parity of `himl-runner` flags: trainer words checked while parsing, user errors named
as the user's, unavailable features refused, experiment names, `--no-<field>`, Azure ML's
``outputs`` folder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import FAST, all_runs, run_cli_subprocess, run_flags

from himl_manifest.configs import hello_world
from himl_manifest.errors import ConfigError, ContainerError, UsageError
from himl_manifest.runner import outputs
from himl_manifest.runner.cli import parse_args
from himl_manifest.runner.execute import build_container, execute

RUNNER = "himl_manifest.runner.cli"

BROKEN = """
from himl_manifest.configs.hello_world import HelloDataModule, HelloWorld


class NoData(HelloDataModule):
    def setup(self, stage=None):
        raise ValueError("no data here")


class BadSetup(HelloWorld):
    def get_data_module(self):
        return NoData()


class BadInit(HelloWorld):
    def __init__(self):
        super().__init__()
        raise RuntimeError("init broke")


class BadValidate(HelloWorld):
    def validate(self):
        raise KeyError("missing setting")


class WrongAccelerator(HelloWorld):
    def __init__(self):
        super().__init__()
        self.accelerator = "tpu-ish"
"""


def _uri() -> str:
    return os.environ["MLFLOW_TRACKING_URI"]


def build(*flags: str) -> Any:
    settings = parse_args(["--model=HelloWorld", *flags])
    assert settings is not None
    return build_container(settings)


# --- item 14: trainer words are checked while parsing ------------------------------------------


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--profiler=foo", r"argument --profiler: 'foo' is not one of simple, advanced, pytorch"),
        ("--accelerator=tpu-ish", r"argument --accelerator: 'tpu-ish' is not one of auto, cpu"),
        ("--deterministic=maybe", r"argument --deterministic: 'maybe' is not one of warn"),
        ("--precision=33", r"argument --precision: '33' is not one of 64-true"),
        ("--strategy=dpp", r"argument --strategy: 'dpp' is not one of auto, ddp"),
        ("--gradient_clip_algorithm=max", r"'max' is not one of norm, value"),
        ("--devices=gpu0", r"argument --devices: 'gpu0' is not one of auto"),
    ],
)
def test_bad_trainer_words_are_usage_errors_while_parsing(flag: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(["--model=HelloWorld", flag])


def test_trainer_words_are_case_insensitive_and_spelled_as_the_schema_does() -> None:
    container = build("--accelerator=CPU", "--deterministic=Warn", "--profiler=Simple")
    assert (container.accelerator, container.deterministic, container.profiler) == (
        "cpu",
        "warn",
        "simple",
    )
    assert build("--deterministic=true", "--devices=0,1").deterministic is True
    assert build("--devices=AUTO").devices == "auto"


def test_a_bad_trainer_word_leaves_no_run_folder_and_no_run(project: Path) -> None:
    done = run_cli_subprocess([RUNNER, "--model=HelloWorld", "--profiler=foo"], project)
    assert done.returncode == 64, done.stderr
    assert "'foo' is not one of simple, advanced, pytorch" in done.stderr
    assert not (project / "outputs").exists()
    assert all_runs(_uri()) == []


def test_a_bad_trainer_word_set_by_the_container_is_refused_before_the_run(
    project: Path, package: Any
) -> None:
    name = package("parity_broken", {"models.py": BROKEN})
    settings = parse_args([f"--model={name}.WrongAccelerator"])
    assert settings is not None
    with pytest.raises(ConfigError, match="accelerator: 'tpu-ish' is not one of auto, cpu"):
        execute(settings)
    assert not (project / "outputs").exists()


# --- item 14: user code's errors are the user's --------------------------------------------------


def test_an_error_in_the_data_module_is_the_users_with_its_traceback_in_the_log(
    project: Path, package: Any
) -> None:
    name = package("parity_broken", {"models.py": BROKEN})
    done = run_cli_subprocess([RUNNER, f"--model={name}.BadSetup", *FAST], project)
    assert done.returncode == 1
    assert "internal error" not in done.stderr
    assert "error: BadSetup: setup (models.py:" in done.stderr
    assert "raised ValueError: no data here (traceback in " in done.stderr
    (folder,) = (project / "outputs").iterdir()
    log = (folder / "runner.log").read_text()
    assert "Traceback (most recent call last)" in log and 'raise ValueError("no data here")' in log
    (run,) = all_runs(_uri())
    assert run.info.status == "FAILED"


def test_an_error_in_init_is_the_users_even_while_parsing_flags(
    project: Path, package: Any
) -> None:
    name = package("parity_broken", {"models.py": BROKEN})
    done = run_cli_subprocess([RUNNER, f"--model={name}.BadInit"], project)
    assert done.returncode == 1
    assert "internal error" not in done.stderr
    assert "error: BadInit: __init__() raised RuntimeError: init broke" in done.stderr
    with pytest.raises(ContainerError, match=r"BadValidate: validate\(\) raised KeyError"):
        build_container(parse_args([f"--model={name}.BadValidate"]))  # type: ignore[arg-type]


# --- item 17: what cannot work is refused --------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--crossval_index=1"], "crossval_index=1 needs crossval_count"),
        (["--crossval_count=1"], "at least 2 folds, not 1"),
        (["--crossval_count=3", "--crossval_index=3"], r"must be in 0\.\.crossval_count-1"),
    ],
)
def test_crossval_flags_that_cannot_work_are_refused(
    project: Path, flags: list[str], message: str
) -> None:
    settings = parse_args(["--model=HelloWorld", *flags])
    assert settings is not None
    with pytest.raises(ConfigError, match=message):
        execute(settings)
    assert not (project / "outputs").exists()


def test_several_nodes_without_a_cluster_are_refused(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("MASTER_ADDR", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "AZUREML_RUN_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AZUREML_ARM_WORKSPACE_NAME", raising=False)
    settings = parse_args(["--model=HelloWorld", "--num_nodes=3"])
    assert settings is not None
    with pytest.raises(ConfigError, match="num_nodes=3 needs a cluster"):
        execute(settings)
    assert not (project / "outputs").exists()


def test_azure_datasets_need_as_many_mountpoints() -> None:
    with pytest.raises(ConfigError, match="dataset_mountpoints has 1 entries and azure_datasets 2"):
        build("--azure_datasets=a,b", "--dataset_mountpoints=/mnt/a")
    assert build("--azure_datasets=a,b", "--dataset_mountpoints=/m/a,/m/b").azure_datasets == [
        "a",
        "b",
    ]
    assert build("--azure_datasets=a,b").dataset_mountpoints == []


def test_an_azure_dataset_without_local_copy_is_warned_about_locally(project: Path) -> None:
    from himl_manifest.configs.hello_world_data import CSV_NAME

    csv = project / "points.csv"  # HelloWorld's first local dataset is its CSV file
    csv.write_bytes((Path(hello_world.__file__).parent / CSV_NAME).read_bytes())
    (result,) = run_flags(
        "--model=HelloWorld",
        "--max_epochs=1",
        "--azure_datasets=images,labels",
        f"--local_datasets={csv}",
        *FAST,
    )
    log = (result.output_dir / "runner.log").read_text()
    assert "Azure dataset 'labels' has no local copy" in log
    assert "'images'" not in log


# --- item 18: experiment names ----------------------------------------------------------------


def _experiments() -> set[str]:
    from runner_helpers import mlflow_client

    return {e.name for e in mlflow_client(_uri()).search_experiments()} - {"Default"}


def test_experiment_env_beats_the_flag_and_names_are_made_safe(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIML_EXPERIMENT_NAME", "name/from/env")
    run_flags("--model=HelloWorld", "--max_epochs=1", "--experiment=from_flag", *FAST)
    assert _experiments() == {"name_from_env"}
    monkeypatch.delenv("HIML_EXPERIMENT_NAME")
    run_flags("--model=HelloWorld", "--max_epochs=1", "--experiment=team/flag", *FAST)
    assert _experiments() == {"name_from_env", "team_flag"}


def test_the_experiment_is_the_class_name_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIML_EXPERIMENT_NAME", raising=False)
    assert build().effective_experiment == "HelloWorld"
    monkeypatch.setenv("HIML_EXPERIMENT_NAME", "a/b")
    assert build("--experiment=x").effective_experiment == "a_b"


# --- item 19: --no-<field_name> ---------------------------------------------------------------


@pytest.mark.parametrize(
    "flag", ["--no-detect_anomaly", "--no-detect-anomaly", "--no_detect_anomaly"]
)
def test_bool_fields_take_the_no_field_name_form(flag: str) -> None:
    assert build("--detect_anomaly", flag).detect_anomaly is False
    assert build(flag, "--detect_anomaly").detect_anomaly is True


# --- item 20: inside Azure ML, ./outputs ----------------------------------------------------------


def test_inside_azureml_a_run_started_in_outputs_writes_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tmp_path / "job"
    (job / "outputs").mkdir(parents=True)
    monkeypatch.setenv("AZUREML_RUN_ID", "job-1")
    monkeypatch.chdir(job)
    assert outputs.make_run_folders("HelloWorld") == outputs.RunFolders(
        job / "outputs", job / "logs"
    )
    monkeypatch.chdir(job / "outputs")
    assert outputs.make_run_folders("HelloWorld") == outputs.RunFolders(
        job / "outputs", job / "logs"
    )
    assert not (job / "outputs" / "outputs").exists()


def test_a_training_run_inside_azureml_in_outputs_never_nests_outputs(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = project / "outputs"
    folder.mkdir()
    monkeypatch.setenv("AZUREML_RUN_ID", "job-2")
    monkeypatch.chdir(folder)
    (result,) = run_flags("--model=HelloWorld", "--max_epochs=1", "--tracking_uri=none", *FAST)
    assert result.output_dir == folder
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    assert (project / "logs" / "runner.log").is_file()
    assert not (folder / "outputs").exists()


def test_a_local_run_started_in_an_outputs_folder_does_not_nest_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "outputs"  # no repository above it: the cwd is the project root
    folder.mkdir()
    for name in ("AZUREML_RUN_ID", "AZUREML_ARM_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(folder)
    made = outputs.make_run_folders("HelloWorld")
    assert made.outputs.parent == folder
    assert not (folder / "outputs").exists()
