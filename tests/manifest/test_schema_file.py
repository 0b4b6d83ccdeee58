"""The schema file itself: a valid 2020-12 schema, documented, with valid examples, shipped
byte-identical in the wheel, and agreeing with the compiled fast check."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from himl_manifest.manifest import schema as schema_module
from himl_manifest.manifest.fastcheck import Unsupported, compile_schema

REPO_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO_ROOT / "schema" / "experiment.v1.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = SCHEMA["$defs"][node["$ref"].rsplit("/", 1)[1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _properties(node: Any, where: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every (path, property schema) of the schema, through $defs and oneOf branches."""
    if not isinstance(node, dict):
        return
    for name, sub in node.get("properties", {}).items():
        yield f"{where}.{name}", sub
        yield from _properties(_resolve(sub), f"{where}.{name}")
    for key in ("oneOf", "anyOf", "allOf"):
        for index, branch in enumerate(node.get(key, [])):
            yield from _properties(branch, f"{where}/{key}[{index}]")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _properties(_resolve(node[key]), f"{where}[]")


def _with_examples(node: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        if "examples" in node:
            yield where, node
        for key, sub in node.items():
            yield from _with_examples(sub, f"{where}/{key}")
    elif isinstance(node, list):
        for index, sub in enumerate(node):
            yield from _with_examples(sub, f"{where}/{index}")


def test_is_a_valid_2020_12_schema() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$id"].startswith("https://")
    assert SCHEMA["x-schema-version"].count(".") == 2
    assert schema_module.schema_version() == SCHEMA["x-schema-version"]


def test_every_property_has_description_and_examples() -> None:
    found = list(_properties(SCHEMA))
    assert len(found) > 60
    missing = [path for path, sub in found if not {"description", "examples"} <= set(_resolve(sub))]
    assert missing == []


@pytest.mark.parametrize("where,node", list(_with_examples(SCHEMA)), ids=lambda v: str(v)[:60])
def test_examples_validate_against_their_subschema(where: str, node: dict[str, Any]) -> None:
    validator = Draft202012Validator({**node, "$defs": SCHEMA["$defs"]})
    for example in node["examples"]:
        assert list(validator.iter_errors(example)) == [], (where, example)


def test_the_fast_check_supports_the_whole_schema() -> None:
    compile_schema(SCHEMA)
    with pytest.raises(Unsupported):
        compile_schema({"type": "object", "dependentRequired": {"a": ["b"]}})


def test_wheel_ships_a_byte_identical_copy(tmp_path: Path) -> None:
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(
        [*pip, "-w", str(tmp_path), str(REPO_ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("himl_manifest-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = archive.read("himl_manifest/_schema/experiment.v1.schema.json")
    assert shipped == SCHEMA_PATH.read_bytes()
