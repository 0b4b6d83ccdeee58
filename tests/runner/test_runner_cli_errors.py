"""Clear errors for a user's own container: a flag value of the wrong type names the field and
its type (usage error, 64); a bare ``--model`` name that only the project defines is suggested in
full; ``himl validate --check-imports`` checks ``params`` values with the runner's own rule.
Real processes of `himl-runner` and `himl` on a user package written into the project."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import FAST

from himl_manifest.errors import LookupFailed, UsageError
from himl_manifest.runner.cli import parse_args

BIN = Path(sys.executable).parent

MODELS = """
    import enum
    from pathlib import Path
    from typing import Annotated, Literal

    from myproj.base import BlobsBase


    class Activation(enum.Enum):
        RELU = "relu"
        TANH = "tanh"


    class BlobsClassifier(BlobsBase):
        learning_rate: Annotated[float, "Adam learning rate."] = 0.01
        pretrained: bool = False
        optimizer: Literal["adam", "sgd"] = "adam"
        activation: Activation = Activation.RELU
        weights: Path | None = None

        def __init__(self) -> None:
            super().__init__()
            self.layers = [8, 8]
            self.max_epochs = 1

        def create_model(self):
            from myproj.net import BlobsNet

            return BlobsNet(self.hidden_size, self.learning_rate)

        def get_data_module(self):
            from myproj.net import BlobsData

            return BlobsData()
    """

BASE = """
    from himl_manifest import LightningContainer


    class BlobsBase(LightningContainer):
        hidden_size: int = 16
    """

NET = """
    import torch
    from pytorch_lightning import LightningDataModule, LightningModule
    from torch.utils.data import DataLoader, TensorDataset


    class BlobsNet(LightningModule):
        def __init__(self, hidden_size: int, learning_rate: float) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(
                torch.nn.Linear(2, hidden_size), torch.nn.ReLU(), torch.nn.Linear(hidden_size, 2)
            )
            self.learning_rate = learning_rate

        def _loss(self, batch):
            x, y = batch
            return torch.nn.functional.cross_entropy(self.net(x), y)

        def training_step(self, batch, batch_idx):
            return self._loss(batch)

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", self._loss(batch))

        def test_step(self, batch, batch_idx):
            self.log("test_loss", self._loss(batch))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.learning_rate)


    class BlobsData(LightningDataModule):
        def _loader(self):
            generator = torch.Generator().manual_seed(0)
            y = torch.randint(0, 2, (32,), generator=generator)
            x = torch.randn(32, 2, generator=generator) + 3 * y[:, None]
            return DataLoader(TensorDataset(x, y), batch_size=8)

        def train_dataloader(self):
            return self._loader()

        def val_dataloader(self):
            return self._loader()

        def test_dataloader(self):
            return self._loader()
    """

CONTAINER = "myproj.models.BlobsClassifier"


@pytest.fixture
def blobs(package: Any) -> str:
    package("myproj", {"base.py": BASE, "models.py": MODELS, "net.py": NET})
    return CONTAINER


def run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / tool), *args], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--hidden_size=big", "argument --hidden_size: 'big' is not an int"),
        ("--hidden_size=1.5", "argument --hidden_size: '1.5' is not an int"),
        ("--learning_rate=fast", "argument --learning_rate: 'fast' is not a float"),
        (
            "--pretrained=maybe",
            "argument --pretrained: 'maybe' is not a bool: use true/false, yes/no or 1/0",
        ),
        ("--optimizer=adamw", "argument --optimizer: 'adamw' is not one of {adam,sgd}"),
        ("--activation=gelu", "argument --activation: 'gelu' is not one of {RELU,TANH}"),
        ("--layers=8,x", "argument --layers: 'x' is not an int"),
    ],
)
def test_a_bad_value_names_the_field_and_its_type(blobs: str, flag: str, message: str) -> None:
    field = flag.partition("=")[0].lstrip("-")
    with pytest.raises(UsageError) as error:
        parse_args([f"--model={blobs}", flag])
    assert str(error.value) == f"{message} (BlobsClassifier.{field})"
    assert error.value.exit_code == 64


def test_good_values_of_every_type_are_taken(blobs: str) -> None:
    settings = parse_args(
        [
            f"--model={blobs}",
            "--hidden_size=4",
            "--learning_rate=0.5",
            "--pretrained",
            "--optimizer=SGD",
            "--activation=tanh",
            "--layers=4,2",
            "--weights=none",
        ]
    )
    assert settings is not None
    assert settings.overrides["hidden_size"] == 4
    assert settings.overrides["layers"] == [4, 2]
    assert settings.overrides["optimizer"] == "sgd"
    assert settings.overrides["weights"] is None


@pytest.mark.slow
def test_the_cli_prints_the_message_and_exits_with_a_usage_error(blobs: str, project: Path) -> None:
    result = run("himl-runner", f"--model={blobs}", "--hidden_size=big", cwd=project)
    assert result.returncode == 64
    assert result.stderr.strip() == (
        "error: argument --hidden_size: 'big' is not an int (BlobsClassifier.hidden_size)"
    )
    assert "Traceback" not in result.stderr and "invalid literal" not in result.stderr


def test_a_bare_name_the_project_defines_is_suggested_in_full(blobs: str, package: Any) -> None:
    package("notes", {"other.py": "class BlobsClassifier:\n    pass\n"})  # not a container
    with pytest.raises(LookupFailed) as error:
        parse_args(["--model=BlobsClassifier"])
    assert str(error.value) == (
        "no class 'BlobsClassifier' found in 'himl_manifest.configs' or its modules. "
        f"Did you mean --model={blobs}? (the project defines it; a bare name is searched in "
        "'himl_manifest.configs' only)"
    )


def test_a_bare_name_nobody_defines_gets_close_names(project: Path) -> None:
    with pytest.raises(LookupFailed, match=r"Did you mean 'HelloWorld'\?$"):
        parse_args(["--model=HeloWorld"])


@pytest.mark.slow
def test_the_suggestion_from_a_fresh_process(blobs: str, project: Path) -> None:
    result = run("himl-runner", "--model=BlobsClassifier", cwd=project)
    assert result.returncode == 1
    assert f"Did you mean --model={blobs}?" in result.stderr


# --- himl validate --check-imports ---------------------------------------------------------------

MANIFEST = """\
apiVersion: himl/v1
kind: Experiment
name: blobs
container: {container}
trainer: {{max_epochs: 1, limit_train_batches: 2, limit_val_batches: 1, num_sanity_val_steps: 0}}
params:
  hidden_size: {hidden_size}
  pretrained: {pretrained}
  layers: [4, 2]
"""


def write_manifest(project: Path, **values: Any) -> Path:
    fields = {"container": CONTAINER, "hidden_size": 4, "pretrained": "false", **values}
    (project / "experiments").mkdir(exist_ok=True)
    path = project / "experiments" / "blobs.yaml"
    path.write_text(MANIFEST.format(**fields), encoding="utf-8")
    return path


@pytest.mark.slow
def test_check_imports_checks_each_value_at_its_line(blobs: str, project: Path) -> None:
    write_manifest(project, hidden_size="big", pretrained="maybe")
    plain = run("himl", "validate", cwd=project)
    assert plain.returncode == 0, plain.stdout  # names are right: types need the class
    result = run("himl", "validate", "--check-imports", "--format", "json", cwd=project)
    assert result.returncode == 1
    found = [
        (d["line"], d["column"], d["path"], d["message"])
        for d in json.loads(result.stdout)["diagnostics"]
    ]
    assert found == [
        (7, 16, "params.hidden_size", "'big' is not an int (BlobsClassifier.hidden_size)"),
        (
            8,
            15,
            "params.pretrained",
            "'maybe' is not a bool: use true/false, yes/no or 1/0 (BlobsClassifier.pretrained)",
        ),
    ]


@pytest.mark.slow
def test_check_imports_suggests_the_full_container_name(blobs: str, project: Path) -> None:
    write_manifest(project, container="BlobsClassifier")
    result = run("himl", "validate", "--check-imports", cwd=project)
    assert result.returncode == 1
    assert result.stdout.splitlines()[0] == (
        "experiments/blobs.yaml:4:12: container: no class 'BlobsClassifier' found in "
        "'himl_manifest.configs' or its modules. (did you mean container: "
        f"{blobs}? a bare name is searched in himl_manifest.configs only)"
    )


@pytest.mark.slow
def test_what_validate_accepts_trains(blobs: str, project: Path) -> None:
    write_manifest(project)
    result = run("himl", "validate", "--check-imports", cwd=project)
    assert result.returncode == 0, result.stdout
    trained = run(
        "himl-runner", f"--model={blobs}", "--hidden_size=4", "--layers=4,2", *FAST, cwd=project
    )
    assert trained.returncode == 0, trained.stderr
    assert "run folder:" in trained.stdout


# --- the documented examples -------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "runner.md"


def documented_errors() -> list[tuple[list[str], str]]:
    """Each ``$ himl-runner ...`` line of docs/runner.md on myproj, and the line after it."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    found = []
    for index, line in enumerate(lines):
        command = line.strip()
        if command.startswith("$ himl-runner ") and "BlobsClassifier" in command:
            found.append((command.split()[2:], lines[index + 1].strip()))
    return found


def test_the_documented_messages_are_what_the_runner_says(blobs: str) -> None:
    examples = documented_errors()
    assert len(examples) >= 5
    for args, expected in examples:
        with pytest.raises((UsageError, LookupFailed)) as error:
            parse_args(args)
        assert f"error: {error.value}" == expected, args
