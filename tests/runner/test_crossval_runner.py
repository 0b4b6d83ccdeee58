"""Cross-validation in the runner: HelloWorld's folds, the effective seed of a fold, a fold's
run spec as settings, `--crossval_count` on a cluster (one job per fold) and locally (one
process per fold, real training)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import FAST, all_runs, run_cli_subprocess

from himl_manifest.configs.hello_world import N_TEST, N_TRAIN, N_VAL, HelloDataModule, fold_rows
from himl_manifest.errors import ConfigError
from himl_manifest.manifest.build import normalize
from himl_manifest.runner import submit
from himl_manifest.runner.cli import parse_args
from himl_manifest.runner.container import LightningContainer
from himl_manifest.runner.execute import build_container, execute
from himl_manifest.runner.settings import from_run_spec
from himl_manifest.spec import Experiment, expand

RUNNER = "himl_manifest.runner.cli"
POOL = range(N_TEST, N_TEST + N_VAL + N_TRAIN)  # the rows folds are made of


# --- HelloWorld's folds ---------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 3, 5])
def test_hello_world_folds_partition_the_non_test_rows(count: int) -> None:
    modules = [HelloDataModule(crossval_count=count, crossval_index=i) for i in range(count)]
    validation = [set(m.val_rows) for m in modules]
    assert sorted(row for rows in validation for row in rows) == list(POOL)  # each row once
    for module, val_rows in zip(modules, validation, strict=True):
        assert set(module.train_rows) == set(POOL) - val_rows
        assert module.test_rows == list(range(N_TEST))
        assert len(module.val) == len(val_rows) and len(module.train) == len(module.train_rows)
    plain = HelloDataModule()
    x_all = {float(x) for x in plain.test.tensors[0]} | {float(x) for x in plain.val.tensors[0]}
    x_all |= {float(x) for x in plain.train.tensors[0]}
    for module in modules:  # the same points, split another way; the test set unchanged
        assert module.test.tensors[0].tolist() == plain.test.tensors[0].tolist()
        folds_x = {float(x) for x in module.val.tensors[0]} | {
            float(x) for x in module.train.tensors[0]
        }
        assert folds_x | {float(x) for x in module.test.tensors[0]} == x_all


def test_validation_sets_differ_between_folds_and_without_folds_nothing_changes() -> None:
    first, second = (HelloDataModule(crossval_count=2, crossval_index=i) for i in (0, 1))
    assert not set(first.val_rows) & set(second.val_rows)
    assert first.val.tensors[0].tolist() != second.val.tensors[0].tolist()
    plain = HelloDataModule()
    assert (len(plain.test), len(plain.val), len(plain.train)) == (N_TEST, N_VAL, N_TRAIN)
    assert plain.val_rows == list(range(N_TEST, N_TEST + N_VAL))


def test_fold_rows_refuses_what_is_no_fold() -> None:
    assert fold_rows(10, 3, 2) == (range(6, 10), [0, 1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="fold 3 of 3"):
        fold_rows(10, 3, 3)


def test_hello_world_hands_its_fold_to_its_data_module() -> None:
    settings = parse_args(["--model=HelloWorld", "--crossval_count=4", "--crossval_index=2"])
    assert settings is not None
    data = build_container(settings).get_data_module()
    assert isinstance(data, HelloDataModule)
    assert data.val_rows == list(HelloDataModule(crossval_count=4, crossval_index=2).val_rows)


# --- the seed of a fold ---------------------------------------------------------------------------


def container(**fields: Any) -> LightningContainer:
    made = LightningContainer()
    for name, value in fields.items():
        setattr(made, name, value)
    made.validate()
    return made


def test_a_fold_is_seeded_with_seed_plus_fold_plus_one() -> None:
    assert container(random_seed=7).get_effective_random_seed() == 7
    for index in range(3):
        fold = container(random_seed=7, crossval_count=3, crossval_index=index)
        assert fold.get_effective_random_seed() == 7 + index + 1
        assert fold.random_seed == 7


@pytest.mark.slow
def test_the_fold_seed_is_the_one_training_uses(project: Path, package: Any) -> None:
    """A real (zero-epoch) run of a container that records the torch seed it was built under."""
    package(
        "seedcheck",
        {
            "__init__.py": "",
            "configs.py": (
                "from pathlib import Path\n"
                "import torch\n"
                "from himl_manifest.configs.hello_world import HelloWorld\n"
                "class SeedProbe(HelloWorld):\n"
                "    def create_model(self):\n"
                "        seed = str(torch.initial_seed())\n"
                "        Path(self.outputs_folder, 'seed.txt').write_text(seed)\n"
                "        return super().create_model()\n"
            ),
        },
    )
    flags = ["--model=seedcheck.configs.SeedProbe", "--max_epochs=0", "--random_seed=10"]
    settings = parse_args(
        [*flags, "--crossval_count=3", "--crossval_index=2", "--tracking_uri=none"]
    )
    assert settings is not None
    [result] = execute(settings)
    assert result.output_dir is not None
    assert (result.output_dir / "seed.txt").read_text() == "13"


# --- a fold's run spec ----------------------------------------------------------------------------


def fold_runs(root: Path, **fields: Any) -> list[Any]:
    document: dict[str, Any] = {"apiVersion": "himl/v1", "kind": "Experiment", "name": "cv"}
    document.update({"container": "HelloWorld", "code": {"track": False}, **fields})
    spec = normalize(document)
    return expand([Experiment("cv", spec, "experiments/cv.yaml", root)])


def test_a_fold_run_spec_sets_both_fields_and_the_seed(project: Path) -> None:
    runs = fold_runs(project, seeds=[3], crossval={"folds": 4})
    for run in runs:
        overrides = from_run_spec(run, root=project).overrides
        assert overrides["random_seed"] == 3
        assert (overrides["crossval_count"], overrides["crossval_index"]) == (4, run.fold)
    plain = fold_runs(project, seeds=[3])[0]
    assert "crossval_count" not in from_run_spec(plain, root=project).overrides


# --- the command line: checks, a cluster --------------------------------------------------------


def test_seeds_and_folds_do_not_combine_on_the_command_line() -> None:
    settings = parse_args(["--model=HelloWorld", "--different_seeds=2", "--crossval_count=3"])
    assert settings is not None
    with pytest.raises(ConfigError, match=r"list seeds and crossval\.folds in a manifest"):
        build_container(settings)


def cluster_runs(project: Path, *flags: str) -> list[Any]:
    settings = parse_args(["--model=HelloWorld", "--cluster=gpu-cluster", *flags])
    assert settings is not None
    return submit.cluster_runs(settings, build_container(settings), project)


def test_a_cluster_gets_one_job_per_fold(project: Path) -> None:
    runs = cluster_runs(project, "--crossval_count=3", "--max_epochs=2")
    assert [(r.seed, r.fold) for r in runs] == [(42, 0), (42, 1), (42, 2)]
    assert [r.spec["tracking"]["display_name"] for r in runs] == [
        f"HelloWorld fold {i}" for i in range(3)
    ]
    assert all(r.spec["crossval_count"] == 3 and "params" not in r.spec for r in runs)
    [one] = cluster_runs(project, "--crossval_count=3", "--crossval_index=1", "--max_epochs=2")
    assert one.fold == 1 and one.run_name == runs[1].run_name  # the same run: the same job


def test_flags_and_a_manifest_make_the_same_fold_runs(project: Path) -> None:
    flags = ("--crossval_count=2", "--random_seed=5", "--max_epochs=3")
    settings = parse_args(["--model=HelloWorld", "--cluster=gpu-cluster", *flags])
    assert settings is not None
    document = submit.manifest_of(settings, build_container(settings), project)
    assert document["crossval"] == {"folds": 2} and document["seeds"] == [5]
    spec = normalize(document)
    from_manifest = expand([Experiment(spec["name"], spec, "", project)])
    from_flags = cluster_runs(project, *flags)
    assert [r.run_name for r in from_flags] == [r.run_name for r in from_manifest]
    assert [r.fold for r in from_flags] == [0, 1]


# --- locally: one process per fold ----------------------------------------------------------------


@pytest.mark.slow
def test_crossval_count_runs_every_fold_in_parallel_processes(project: Path) -> None:
    done = run_cli_subprocess(
        [RUNNER, "--model=HelloWorld", "--max_epochs=1", "--crossval_count=2", "--jobs=2", *FAST],
        project,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fold 0: run folder:" in done.stdout and "fold 1: run folder:" in done.stdout
    assert "[fold 1]" in done.stderr
    assert len(list((project / "outputs").iterdir())) == 2
    runs = all_runs(os.environ["MLFLOW_TRACKING_URI"])
    assert sorted(r.data.tags["mlflow.runName"] for r in runs) == [
        "HelloWorld-s42-f0",
        "HelloWorld-s42-f1",
    ]
    assert sorted(r.data.params["crossval_index"] for r in runs) == ["0", "1"]
    assert {r.data.params["crossval_count"] for r in runs} == {"2"}
    assert {r.data.params["random_seed"] for r in runs} == {"42"}
    assert {r.info.status for r in runs} == {"FINISHED"}
    for folder in (project / "outputs").iterdir():
        assert (folder / "metrics.csv").is_file()
