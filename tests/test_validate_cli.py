"""`himl validate` and `himl schema` through the real CLI: formats, exit codes, tracebacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.diagnostics import JSON_FORMAT_VERSION

REPO_ROOT = Path(__file__).resolve().parents[1]

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
    def boom(paths: object) -> None:
        raise ValueError("boom")

    monkeypatch.setattr("himl_manifest.operations.validate.validate_paths", boom)
    monkeypatch.delenv("HIML_TRACEBACK", raising=False)
    code, _, err = _run(capsys, "validate")
    assert code == 1
    assert "Traceback" not in err
    assert "internal error: ValueError: boom" in err and "--traceback" in err

    code, _, err = _run(capsys, "--traceback", "validate")
    assert code == 1 and "Traceback (most recent call last)" in err

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
