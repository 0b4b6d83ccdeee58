"""Container fields: discovery, typed values from text and JSON, overrides."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Literal

import pytest

from himl_manifest.errors import ConfigError
from himl_manifest.runner.container import LightningContainer
from himl_manifest.runner.fields import apply_overrides, coerce, container_fields, field_values


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Sample(LightningContainer):
    color: Color = Color.RED
    size: Literal["small", "large"] = "small"
    rate: Annotated[float, "Learning rate."] = 0.1
    _hidden: int = 1

    def __init__(self) -> None:
        super().__init__()
        self.layers = 3
        self.names = ["a", "b"]
        self.maybe = None
        self._private = 5


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("YES", True), ("1", True), ("false", False), ("no", False), ("0", False)],
)
def test_bool_text(text: str, expected: bool) -> None:
    assert coerce(text, bool) is expected


def test_bool_rejects_other_text() -> None:
    with pytest.raises(ValueError, match="true/false"):
        coerce("maybe", bool)


@pytest.mark.parametrize(
    ("value", "tp", "expected"),
    [
        ("5", int, 5),
        (5, float, 5.0),
        ("0.5", float, 0.5),
        ("x", str, "x"),
        ("a/b", Path, Path("a/b")),
        ("green", Color, Color.GREEN),
        ("GREEN", Color, Color.GREEN),
        ("Large", Literal["small", "large"], "large"),
        ("a, b", list[str], ["a", "b"]),
        ("", list[str], []),
        (["1", 2], list[int], [1, 2]),
        ("none", int | None, None),
        ("3", int | None, 3),
        ("auto", int | str | list[int], "auto"),
        ("2", int | str | list[int], 2),
        ("0,1", int | str | list[int], [0, 1]),
        ("0.25", int | float | None, 0.25),
        ("10", int | float | None, 10),
        ("warn", bool | str | None, "warn"),
        ("true", bool | str | None, True),
    ],
)
def test_coerce(value: object, tp: object, expected: object) -> None:
    assert coerce(value, tp) == expected


@pytest.mark.parametrize(
    ("value", "tp"), [("x", int), (True, int), (1.5, int), ("purple", Color), (3, list[int])]
)
def test_coerce_rejects(value: object, tp: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        coerce(value, tp)


def test_fields_are_annotations_and_init_attributes() -> None:
    fields = container_fields(Sample())
    assert {"color", "size", "rate", "layers", "names", "maybe", "max_epochs"} <= set(fields)
    assert "_hidden" not in fields and "_private" not in fields
    assert fields["rate"].help == "Learning rate."
    assert fields["layers"].type is int
    assert fields["names"].type == list[str]
    assert fields["max_epochs"].owner is LightningContainer
    assert fields["color"].owner is Sample


def test_overrides_are_typed_and_checked_together() -> None:
    sample = Sample()
    apply_overrides(sample, {"layers": "4", "color": "green", "rate": 1}, source="test")
    assert (sample.layers, sample.color, sample.rate) == (4, Color.GREEN, 1.0)
    with pytest.raises(ConfigError) as error:
        apply_overrides(sample, {"layer": 1, "rate": "fast"}, source="params")
    message = str(error.value)
    assert "no field 'layer' (did you mean 'layers'?)" in message
    assert "rate" in message


def test_mutable_defaults_are_per_instance() -> None:
    first, second = Sample(), Sample()
    first.azure_datasets.append("x")
    assert second.azure_datasets == []
    assert field_values(second)["azure_datasets"] == []
