"""`himl-runner` flags: two-pass parsing, types, precedence, help, errors and exit codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from himl_manifest.cli.main import run_cli
from himl_manifest.errors import ConfigError, UsageError
from himl_manifest.runner.cli import parse_args, runner_command
from himl_manifest.runner.execute import build_container, execute

PRECEDENCE = """
from himl_manifest import LightningContainer

class Layered(LightningContainer):
    width: int = 1
    depth: int = 1
    heads: int = 1
    dropout: float = 0.0
    use_bias: bool = False
    flag_b: bool = True

    def __init__(self):
        super().__init__()
        self.depth = 2
        self.heads = 2
        self.dropout = 0.2
        self.note = "from init"

    def set_model_variant(self, variant_name):
        if variant_name != "big":
            super().set_model_variant(variant_name)
        self.heads = 3
        self.dropout = 0.3
"""


@pytest.fixture
def layered(package: Any) -> str:
    return package("cli_prec", {"models.py": PRECEDENCE}) + ".Layered"


def build(*flags: str) -> Any:
    settings = parse_args(list(flags))
    assert settings is not None
    return build_container(settings)


def test_precedence_class_init_variant_flag(layered: str) -> None:
    container = build(f"--model={layered}", "--model_variant=big", "--dropout=0.4")
    assert container.width == 1  # class default
    assert container.depth == 2  # __init__
    assert container.heads == 3  # variant
    assert container.dropout == 0.4  # flag
    assert container.note == "from init"
    assert build(f"--model={layered}").heads == 2


def test_unknown_variant_is_an_error(layered: str) -> None:
    with pytest.raises(ConfigError, match="no model variants"):
        build(f"--model={layered}", "--model_variant=huge")


@pytest.mark.parametrize(
    ("flags", "use_bias", "flag_b"),
    [
        (["--use_bias"], True, True),
        (["--use_bias=true"], True, True),
        (["--use_bias=yes", "--flag_b=no"], True, False),
        (["--use_bias=1", "--flag_b=0"], True, False),
        (["--use-bias", "--no-flag-b"], True, False),
        (["--no_flag_b"], False, False),
        (["--use_bias", "false"], False, True),
    ],
)
def test_bool_flags_in_every_form(
    layered: str, flags: list[str], use_bias: bool, flag_b: bool
) -> None:
    container = build(f"--model={layered}", *flags)
    assert (container.use_bias, container.flag_b) == (use_bias, flag_b)


def test_typed_flags_and_lists(layered: str) -> None:
    container = build(
        f"--model={layered}",
        "--width",
        "7",
        "--local_datasets=a,b",
        "--devices=2",
        "--limit_train_batches=0.5",
        "--note=hello",
    )
    assert container.width == 7
    assert container.local_datasets == [Path("a"), Path("b")]
    assert container.devices == 2
    assert container.limit_train_batches == 0.5
    assert container.note == "hello"


def test_unknown_flag_is_rejected_by_name_with_a_suggestion(layered: str) -> None:
    with pytest.raises(UsageError, match=r"unknown flag --widht \(did you mean '--width'\?\)"):
        parse_args([f"--model={layered}", "--widht=3"])


def test_bad_value_and_missing_model_are_usage_errors(layered: str) -> None:
    with pytest.raises(UsageError, match="--width"):
        parse_args([f"--model={layered}", "--width=wide"])
    with pytest.raises(UsageError, match="--model is required"):
        parse_args(["--max_epochs=3"])


def test_help_shows_the_models_fields_with_current_defaults(
    layered: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert parse_args([f"--model={layered}", "--model_variant=big", "--help"]) is None
    out = capsys.readouterr().out
    assert "Layered fields:" in out
    assert "--width" in out and "[int, default: 1]" in out
    assert "[float, default: 0.3]" in out  # the variant's value
    assert "--note" in out and "'from init'" in out
    assert "trainer fields:" in out and "--max_epochs" in out


def test_help_without_a_model_points_to_model(
    capsys: pytest.CaptureFixture[str], project: Path
) -> None:
    assert run_cli(runner_command, ["--help"], prog_name="himl-runner") == 0
    assert "--model=NAME" in capsys.readouterr().out


def test_exit_codes(layered: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(runner_command, [f"--model={layered}", "--nope"], prog_name="himl-runner") == 64
    assert "unknown flag --nope" in capsys.readouterr().err
    assert run_cli(runner_command, ["--model=NoSuchModelQ"], prog_name="himl-runner") == 1
    assert "no class 'NoSuchModelQ'" in capsys.readouterr().err


def test_cluster_without_a_workspace_says_how_to_configure_one(
    layered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AZUREML_SUBSCRIPTION_ID", "AZUREML_RESOURCE_GROUP", "AZUREML_WORKSPACE_NAME"):
        monkeypatch.delenv(name, raising=False)
    settings = parse_args([f"--model={layered}", "--cluster=gpu-cluster"])
    assert settings is not None
    with pytest.raises(ConfigError, match="no Azure ML workspace found"):
        execute(settings)


def test_invalid_field_combinations_are_config_errors(layered: str) -> None:
    with pytest.raises(ConfigError, match="exclude each other"):
        build(f"--model={layered}", "--resume_training", "--run_inference_only")
    with pytest.raises(ConfigError, match="cannot be combined"):
        build(f"--model={layered}", "--different_seeds=2", "--crossval_count=3")
