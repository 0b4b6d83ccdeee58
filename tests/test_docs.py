"""Every manifest shown in the README and docs/ is valid: the examples people copy must work."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from himl_manifest.manifest.validate import validate_paths

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def _manifest_blocks() -> list[tuple[str, int, str]]:
    found = []
    for doc in DOCS:
        if not doc.exists():
            continue
        for number, match in enumerate(BLOCK.finditer(doc.read_text(encoding="utf-8"))):
            text = match.group(1)
            if re.search(r"^apiVersion: himl/v1", text, re.MULTILINE) and "# invalid" not in text:
                found.append((doc.relative_to(ROOT).as_posix(), number, text))
    return found


BLOCKS = _manifest_blocks()


def test_the_readme_shows_manifests() -> None:
    assert any(name == "README.md" for name, _, _ in BLOCKS)


@pytest.mark.parametrize(("doc", "number", "text"), BLOCKS, ids=[f"{d}#{n}" for d, n, _ in BLOCKS])
def test_documented_manifest_is_valid(tmp_path: Path, doc: str, number: int, text: str) -> None:
    (tmp_path / ".git").mkdir()  # the repository root, for paths in the manifest
    shutil.copy(ROOT / "environment.yml", tmp_path / "environment.yml")
    (tmp_path / "experiments").mkdir()
    manifest = tmp_path / "experiments" / "example.yaml"
    manifest.write_text(text, encoding="utf-8")
    result = validate_paths([manifest])
    assert result.ok, "\n".join(
        f"{d.location()}: {d.path}: {d.message}" for d in result.diagnostics
    )
