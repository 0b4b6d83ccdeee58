"""Where a diagnostic found after validation points in its manifest: its line and column.

Checks that run later than ``himl validate`` (apply's pre-flight against a workspace) know the
manifest and the field (``compute.target``, ``datasets[1].azure``), not the position: this
finds it in the file, as validation's own diagnostics do, so every problem reads
``experiments/x.yaml:12:5: compute.target: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.manifest.loader import LoadedFile, load_file

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def parse_path(path: str) -> list[str | int]:
    """``datasets[1].azure`` -> ``["datasets", 1, "azure"]``."""
    return [int(index) if index else name for name, index in _STEP.findall(path)]


def locate(diagnostics: Iterable[Diagnostic], root: Path) -> list[Diagnostic]:
    """``diagnostics`` with the line and column of their field filled in where they have
    none and name a manifest under ``root`` (each file read once)."""
    loaded: dict[str, LoadedFile | None] = {}
    out = []
    for diagnostic in diagnostics:
        if diagnostic.line or not diagnostic.path:
            out.append(diagnostic)
            continue
        if diagnostic.file not in loaded:
            path = root / diagnostic.file
            loaded[diagnostic.file] = load_file(path, diagnostic.file) if path.is_file() else None
        found = loaded[diagnostic.file]
        position = _position(found, parse_path(diagnostic.path)) if found else None
        out.append(
            replace(diagnostic, line=position[0], column=position[1]) if position else diagnostic
        )
    return out


def _position(loaded: LoadedFile, steps: list[str | int]) -> tuple[int, int] | None:
    """The position of ``steps`` in the first document that has its first key."""
    for document in loaded.documents:
        if isinstance(document.data, dict) and steps and steps[0] in document.data:
            return loaded.position(document.index, steps)
    return None
