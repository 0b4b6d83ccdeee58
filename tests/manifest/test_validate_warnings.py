"""`himl validate` warns, and still exits 0, about a checkpoint URL without a sha256; `trusted`
is a manifest key of the url source only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from himl_manifest.cli.main import cli, run_cli

UNPINNED = (
    "apiVersion: himl/v1\nkind: Experiment\nname: u\ncontainer: HelloWorld\nmode: inference\n"
    "checkpoint:\n  source:\n    url: https://example.org/m.ckpt\n    trusted: true\n"
)
TYPO = "apiVersion: himl/v1\nkind: Experiment\nname: t\ncontainer: HelloWorld\nseedz: 2\n"


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run_cli(cli, list(args))
    return code, capsys.readouterr().out


def test_unpinned_url_is_a_warning_in_every_format(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "experiments" / "u.yaml").write_text(UNPINNED)
    code, out = _run(capsys, "validate")
    assert code == 0
    assert out == (
        "experiments/u.yaml:8:10: warning: checkpoint.source.url: checkpoint URL without a "
        "sha256: whatever the server sends is used (add checkpoint.source.sha256 (hex) to pin "
        "the file)\n1 file valid, 1 warning.\n"
    )
    code, out = _run(capsys, "validate", "--format", "json")
    payload = json.loads(out)
    assert code == 0 and payload["valid"] is True
    (diagnostic,) = payload["diagnostics"]
    assert diagnostic["severity"] == "warning" and diagnostic["code"] == "checkpoint-unpinned"
    code, out = _run(capsys, "validate", "--format", "github")
    assert code == 0 and out.startswith("::warning file=experiments/u.yaml,line=8,col=10,")


def test_a_warning_does_not_hide_an_error(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (repo / "experiments" / "u.yaml").write_text(UNPINNED)
    (repo / "experiments" / "t.yaml").write_text(TYPO)
    code, out = _run(capsys, "validate")
    assert code == 1
    assert out.splitlines()[-1] == "1 problem in 1 of 2 files, 1 warning."


def test_a_pinned_url_and_trusted_only_on_urls(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = UNPINNED.replace("trusted: true", "sha256: " + "a" * 64)
    (repo / "experiments" / "u.yaml").write_text(pinned)
    assert _run(capsys, "validate") == (0, "1 file valid.\n")
    on_a_path = UNPINNED.replace("url: https://example.org/m.ckpt", "path: m.ckpt")
    (repo / "experiments" / "u.yaml").write_text(on_a_path)
    code, out = _run(capsys, "validate")
    assert code == 1 and "trusted" in out
