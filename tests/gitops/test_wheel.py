"""The wheel carries `himl init`'s templates (package data under himl_manifest/templates/)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

TEMPLATES = Path(__file__).resolve().parents[2] / "src" / "himl_manifest" / "templates"


@pytest.mark.slow
def test_the_wheel_ships_every_template(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=TEMPLATES.parents[2],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("himl_manifest-*.whl")
    sources = sorted(p for p in TEMPLATES.iterdir() if p.is_file())
    assert {p.name for p in sources} >= {"workflow.yml", "hello-world.yaml", "gitignore.txt"}
    with zipfile.ZipFile(wheel) as archive:
        for source in sources:
            assert archive.read(f"himl_manifest/templates/{source.name}") == source.read_bytes()
