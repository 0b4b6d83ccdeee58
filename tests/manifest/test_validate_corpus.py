"""The example corpus: every file of tests/manifests/valid is valid; every case of
tests/manifests/invalid (a file, or a folder validated as a whole) gives exactly the diagnostics
written in ``<case>.expected`` beside it (``{root}`` stands for the repository root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from himl_manifest.diagnostics import render_text
from himl_manifest.manifest.semantic import find_root
from himl_manifest.manifest.validate import validate_paths

CORPUS = Path(__file__).parents[1] / "manifests"
VALID = sorted((CORPUS / "valid").glob("*.y*ml"))
INVALID = sorted(
    p for p in (CORPUS / "invalid").iterdir() if p.suffix in (".yaml", ".yml") or p.is_dir()
)


def _lines(case: Path) -> list[str]:
    result = validate_paths([Path(case.name)])
    return render_text(result.diagnostics, len(result.files)).splitlines()[:-1]


@pytest.mark.parametrize("case", VALID, ids=lambda p: p.name)
def test_valid_example(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(case.parent)
    result = validate_paths([Path(case.name)])
    assert result.diagnostics == []
    assert result.documents


@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.name)
def test_invalid_example(case: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected_file = case.with_name(case.stem + ".expected") if case.is_file() else None
    expected_file = expected_file or case.with_name(case.name + ".expected")
    root = str(find_root(case.parent.resolve()))
    expected = expected_file.read_text().replace("{root}", root).splitlines()
    monkeypatch.chdir(case.parent)
    assert expected, f"{expected_file.name} must list at least one diagnostic"
    assert _lines(case) == expected


def test_every_invalid_case_has_expectations() -> None:
    for case in INVALID:
        stem = case.stem if case.is_file() else case.name
        assert (case.parent / f"{stem}.expected").is_file(), case
    expectations = {p.stem for p in (CORPUS / "invalid").glob("*.expected")}
    assert expectations == {c.stem if c.is_file() else c.name for c in INVALID}


def test_the_whole_valid_folder_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # Cross-file rules see every document: the full example's reference resolves.
    monkeypatch.chdir(CORPUS)
    result = validate_paths([Path("valid")])
    assert result.ok, result.diagnostics
    assert len(result.files) == len(VALID)


def test_the_whole_invalid_folder_reports_every_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(CORPUS)
    result = validate_paths([Path("invalid")])
    assert {d.file.split("/")[1] for d in result.diagnostics} >= {
        p.name for p in INVALID if p.is_file()
    }
