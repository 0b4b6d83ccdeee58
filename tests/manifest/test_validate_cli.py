"""`himl validate` and `himl schema` through the real CLI: formats, exit codes, tracebacks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.diagnostics import JSON_FORMAT_VERSION

REPO_ROOT = Path(__file__).resolve().parents[2]

GOOD = "apiVersion: himl/v1\nkind: Experiment\nname: good\ncontainer: HelloWorld\n"
TYPO = GOOD.replace("name: good", "name: typo") + "trainer:\n  max_epoch: 3\n"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(cli, list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_exit_0(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "experiments" / "good.yaml").write_text(GOOD)
    assert _run(capsys, "validate") == (0, "1 file valid.\n", "")


def test_invalid_text(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "experiments" / "x.yaml").write_text(TYPO)
    code, out, _ = _run(capsys, "validate", "experiments/")
    assert code == 1
    assert out == (
        "experiments/x.yaml:6:3: trainer.max_epoch: unknown key (did you mean 'max_epochs'?)\n"
        "1 problem in 1 of 1 file.\n"
    )


def test_json_format(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "experiments" / "x.yaml").write_text(TYPO)
    (repo / "experiments" / "y.yaml").write_text(GOOD)
    code, out, err = _run(capsys, "validate", "--format", "json")
    assert code == 1 and err == ""
    payload = json.loads(out)
    assert list(payload) == ["version", "valid", "files_checked", "diagnostics"]
    assert payload == {
        "version": JSON_FORMAT_VERSION,
        "valid": False,
        "files_checked": 2,
        "diagnostics": [
            {
                "file": "experiments/x.yaml",
                "line": 6,
                "column": 3,
                "path": "trainer.max_epoch",
                "message": "unknown key",
                "hint": "did you mean 'max_epochs'?",
                "code": "schema",
                "severity": "error",
            }
        ],
    }


def test_json_format_valid(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "experiments" / "y.yaml").write_text(GOOD)
    code, out, _ = _run(capsys, "validate", "--format=json")
    assert code == 0
    assert json.loads(out) == {"version": 1, "valid": True, "files_checked": 1, "diagnostics": []}


def test_github_format(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "experiments" / "x.yaml").write_text(TYPO)
    (repo / "experiments" / "z.yaml").write_text("a: [\n")
    code, out, _ = _run(capsys, "validate", "--format", "github")
    assert code == 1
    assert out.splitlines() == [
        "::error file=experiments/x.yaml,line=6,col=3,title=himl validate%3A trainer.max_epoch"
        "::unknown key (did you mean 'max_epochs'?)",
        "::error file=experiments/z.yaml,line=2,col=1,title=himl validate%3A yaml"
        "::YAML syntax error: did not find expected node content (while parsing a flow node)",
    ]


def test_github_format_escapes_newlines_and_percent() -> None:
    from himl_manifest.diagnostics import Diagnostic, render_github

    text = render_github([Diagnostic("a,b:c.yaml", 0, 0, "", "50% bad\nreally", "", "io")], 1)
    assert text == "::error file=a%2Cb%3Ac.yaml,title=himl validate%3A io::50%25 bad%0Areally"


@pytest.mark.parametrize(
    "args", [["validate", "--bogus"], ["validate", "--format", "xml"], ["nosuchcommand"]]
)
def test_usage_error_exit_64(
    repo: Path, capsys: pytest.CaptureFixture[str], args: list[str]
) -> None:
    code, out, err = _run(capsys, *args)
    assert code == 64
    assert out == "" and "Error" in err


def test_schema_prints_exactly_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "schema")
    assert code == 0
    assert out == (REPO_ROOT / "schema" / "experiment.v1.schema.json").read_text(encoding="utf-8")


def test_internal_error_without_and_with_traceback(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(paths: object, **options: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr("himl_manifest.operations.validate.validate_paths", boom)
    monkeypatch.delenv("HIML_TRACEBACK", raising=False)
    code, _, err = _run(capsys, "validate")
    assert code == 1
    assert "Traceback" not in err
    assert "internal error: ValueError: boom" in err and "--traceback" in err

    code, _, err = _run(capsys, "--traceback", "validate")
    assert code == 1 and "Traceback (most recent call last)" in err
    assert "HIML_TRACEBACK" not in os.environ  # for that command only: nothing leaks

    monkeypatch.setenv("HIML_TRACEBACK", "1")
    code, _, err = _run(capsys, "validate")
    assert code == 1 and "Traceback (most recent call last)" in err


def test_repository_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    examples = sorted((REPO_ROOT / "experiments").glob("*.y*ml"))
    assert examples
    for example in examples:
        first = example.read_text(encoding="utf-8").splitlines()[0]
        assert first == "# yaml-language-server: $schema=../schema/experiment.v1.schema.json"
    code, out, _ = _run(capsys, "validate", *map(str, examples))
    assert code == 0, out


# -- a file is checked with its folder; --whole-folder -----------------------------------------

BASELINE = (
    "apiVersion: himl/v1\nkind: Experiment\nname: blobs-baseline\ncontainer: HelloWorld\n"
    "seeds: [0, 1]\n"
)
FINETUNE = (
    "apiVersion: himl/v1\nkind: Experiment\nname: blobs-finetune\ncontainer: HelloWorld\n"
    "checkpoint:\n  source: {experiment: blobs-baseline, seed: 1}\n"
)


def _pair(repo: Path, folder: str = "experiments") -> None:
    (repo / folder).mkdir(parents=True, exist_ok=True)
    (repo / "experiments" / "baseline.yaml").write_text(BASELINE)
    (repo / folder / "finetune.yaml").write_text(FINETUNE)


def test_a_file_alone_resolves_references_against_its_folder(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pair(repo)
    assert _run(capsys, "validate", "experiments/finetune.yaml") == (0, "1 file valid.\n", "")
    assert _run(capsys, "validate", "--whole-folder", "experiments/finetune.yaml") == (
        0,
        "2 files valid.\n",
        "",
    )


def test_a_reference_to_a_missing_experiment_still_fails(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pair(repo)
    (repo / "experiments" / "finetune.yaml").write_text(FINETUNE.replace("blobs-baseline", "x"))
    code, out, _ = _run(capsys, "validate", "experiments/finetune.yaml")
    assert code == 1
    assert "no experiment named 'x' in the manifests given" in out
    assert "blobs-finetune" not in out  # the file's own name is not suggested


def test_a_sibling_s_own_problems_only_with_whole_folder(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pair(repo)
    (repo / "experiments" / "other.yaml").write_text(TYPO)
    assert _run(capsys, "validate", "experiments/finetune.yaml") == (0, "1 file valid.\n", "")
    code, out, _ = _run(capsys, "validate", "--whole-folder", "experiments/finetune.yaml")
    assert code == 1
    assert out == (
        "experiments/other.yaml:6:3: trainer.max_epoch: unknown key (did you mean 'max_epochs'?)\n"
        "1 problem in 1 of 3 files.\n"
    )


def test_a_change_that_breaks_another_manifest_is_reported(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pair(repo)
    (repo / "experiments" / "baseline.yaml").write_text(BASELINE.replace("[0, 1]", "[0]"))
    expected = (
        "experiments/finetune.yaml:6:46: checkpoint.source.seed: experiment 'blobs-baseline' "
        "has no seed 1 (its seeds: 0)\n"
    )
    code, out, _ = _run(capsys, "validate", "experiments/baseline.yaml")
    assert (code, out) == (1, expected + "1 problem in 1 of 2 files.\n")
    code, out, _ = _run(capsys, "validate", "--whole-folder", "experiments/baseline.yaml")
    assert (code, out) == (1, expected + "1 problem in 1 of 2 files.\n")


def test_a_cycle_through_the_file_and_a_name_taken_twice(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pair(repo)
    cyclic = BASELINE + "checkpoint:\n  source: {experiment: blobs-finetune}\n"
    (repo / "experiments" / "baseline.yaml").write_text(cyclic)
    code, out, _ = _run(capsys, "validate", "experiments/finetune.yaml")
    assert code == 1
    assert "checkpoint sources form a cycle: blobs-baseline -> blobs-finetune" in out
    (repo / "experiments" / "baseline.yaml").write_text(BASELINE)
    (repo / "experiments" / "copy.yaml").write_text(FINETUNE)
    code, out, _ = _run(capsys, "validate", "experiments/copy.yaml")
    assert code == 1
    assert out.startswith(
        "experiments/copy.yaml:3:7: name: experiment name 'blobs-finetune' is already used "
        "(first defined at experiments/finetune.yaml:3)\n"
    )


def test_the_folder_of_a_nested_file_is_the_top_folder(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pair(repo, "experiments/blobs")
    assert _run(capsys, "validate", "experiments/blobs/finetune.yaml")[0] == 0
    code, out, _ = _run(capsys, "validate", "--whole-folder", "experiments/blobs/finetune.yaml")
    assert (code, out) == (0, "2 files valid.\n")


def test_a_file_in_the_current_folder_has_its_siblings_only(
    repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _pair(repo)
    (repo / "experiments" / "deeper").mkdir()
    (repo / "experiments" / "deeper" / "bad.yaml").write_text(TYPO)
    monkeypatch.chdir(repo / "experiments")
    assert _run(capsys, "validate", "finetune.yaml") == (0, "1 file valid.\n", "")
    assert _run(capsys, "validate", "--whole-folder", "finetune.yaml") == (
        0,
        "2 files valid.\n",
        "",
    )


def test_whole_folder_still_reports_a_missing_file(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _pair(repo)
    code, out, _ = _run(capsys, "validate", "--whole-folder", "experiments/gone.yaml")
    assert (code, out) == (
        1,
        "experiments/gone.yaml: no such file or folder\n1 problem in 1 of 2 files.\n",
    )


def test_the_documented_example_runs(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The console example of docs/cli.md's "A file is checked with its folder"."""
    text = (REPO_ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    section = text.split("### A file is checked with its folder", 1)[1]
    block = section.split("```console\n", 1)[1].split("```", 1)[0]
    _pair(repo)
    steps = block.split("$ ")[1:]
    assert len(steps) == 2
    for step in steps:
        command, _, expected = step.partition("\n")
        args = command.split("#")[0].split()
        assert args[0] == "himl"
        assert _run(capsys, *args[1:]) == (0, expected, "")
