"""manifest/positions.py: diagnostics found after validation get the line of their field."""

from __future__ import annotations

from pathlib import Path

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.manifest.positions import locate, parse_path

MANIFEST = """\
apiVersion: himl/v1
kind: Experiment
name: finetune
container: HelloWorld
datasets:
  - {azure: "panda:3"}
  - azure: tiles
compute:
  target: gpu-clustr
"""


def test_paths_parse() -> None:
    assert parse_path("datasets[1].azure") == ["datasets", 1, "azure"]
    assert parse_path("compute.target") == ["compute", "target"]


def test_fields_are_located(tmp_path: Path) -> None:
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "ft.yaml").write_text(MANIFEST, encoding="utf-8")
    found = locate(
        [
            Diagnostic("experiments/ft.yaml", 0, 0, "compute.target", "no compute"),
            Diagnostic("experiments/ft.yaml", 0, 0, "datasets[1].azure", "no data asset"),
            Diagnostic("experiments/ft.yaml", 0, 0, "", "no field: left as it is"),
            Diagnostic("experiments/gone.yaml", 0, 0, "compute.target", "no file"),
        ],
        tmp_path,
    )
    assert [(d.line, d.column) for d in found] == [(9, 11), (7, 12), (0, 0), (0, 0)]
