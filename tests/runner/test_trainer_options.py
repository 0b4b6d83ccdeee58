"""The manifest schema's `trainer` section is the one list of Lightning Trainer options: the
container declares each (with a default the schema allows), and each one reaches `Trainer`.

Runner settings with a fixed set of values (``log_level``, ``debug_ddp``) come from the schema's
`runner` section alike.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import types
from pathlib import Path
from typing import Any

import pytest

from himl_manifest.manifest.schema import problems, resolve, schema
from himl_manifest.runner.cli import build_parser
from himl_manifest.runner.container import LightningContainer, trainer_options
from himl_manifest.runner.fields import apply_overrides, container_fields
from himl_manifest.runner.settings import RunSettings, runner_choices, runner_default
from himl_manifest.runner.tracking import NullTracker
from himl_manifest.runner.trainer import create_trainer

OPTIONS = trainer_options()
NAMESPACES = [
    name
    for name in ("pytorch_lightning", "lightning.pytorch")
    if importlib.util.find_spec(name.split(".")[0]) is not None
]


def _option_schema(name: str) -> dict[str, Any]:
    return resolve(resolve(schema()["properties"]["trainer"])["properties"][name])


def _manifest_problems(name: str, value: Any) -> list[str]:
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": "x",
        "container": "HelloWorld",
        "trainer": {name: value},
    }
    return [p.message for p in problems(document)]


def _candidates(node: dict[str, Any]) -> list[Any]:
    """Values worth trying for an option: its enum, examples and a few of its type's values."""
    found: list[Any] = [*node.get("enum", []), *node.get("examples", [])]
    for branch in node.get("oneOf", []) + node.get("anyOf", []):
        branch = resolve(branch)
        found += [branch["const"]] if "const" in branch else _candidates(branch)
    kinds = node.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "boolean" in kinds:
        found += [True, False]
    if "integer" in kinds:
        found += [node.get("minimum", 0) + step for step in (1, 2, 3)]
    if "number" in kinds:
        found += [0.25, 2.5]
    return found


def non_default_value(name: str) -> Any:
    """A value the schema allows for ``name`` that differs from the container's default."""
    default = getattr(LightningContainer(), name)
    for value in _candidates(_option_schema(name)):
        if value != default and not isinstance(value, list) and not _manifest_problems(name, value):
            return value
    raise AssertionError(f"no schema-valid value of trainer option {name} besides {default!r}")


def test_the_trainer_options_are_the_schema_trainer_section() -> None:
    assert OPTIONS
    assert list(OPTIONS) == list(schema()["$defs"]["trainer"]["properties"])


def test_the_container_declares_every_trainer_option() -> None:
    fields = container_fields(LightningContainer())
    missing = [name for name in OPTIONS if name not in fields]
    assert not missing, f"LightningContainer has no field for trainer options {missing}"
    assert all(fields[name].owner is LightningContainer for name in OPTIONS)


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_no_container_field_is_a_trainer_argument_the_schema_lacks(namespace: str) -> None:
    # A Trainer argument added to the container alone would never be set from a manifest.
    trainer = importlib.import_module(namespace).Trainer
    arguments = set(inspect.signature(trainer.__init__).parameters)
    fields = set(container_fields(LightningContainer()))
    assert fields & arguments <= set(OPTIONS)


@pytest.mark.parametrize("name", OPTIONS)
def test_the_container_default_agrees_with_the_schema(name: str) -> None:
    default = getattr(LightningContainer(), name)
    node = _option_schema(name)
    if "default" in node:
        assert default == node["default"]
    if default is not None:  # None: left to Lightning, not passed to Trainer
        assert _manifest_problems(name, default) == []


@pytest.mark.parametrize("name", OPTIONS)
def test_the_container_field_takes_every_value_the_schema_offers(name: str) -> None:
    for value in _candidates(_option_schema(name)):
        if _manifest_problems(name, value):
            continue
        container = LightningContainer()
        apply_overrides(container, {name: value}, source="trainer")
        assert getattr(container, name) == value


def _recording_namespace(namespace: str, calls: list[dict[str, Any]]) -> types.ModuleType:
    """Lightning's namespace, but its Trainer checks its arguments against the real Trainer's
    signature and records them instead of starting a trainer (no accelerator is needed)."""
    real = importlib.import_module(namespace)
    signature = inspect.signature(real.Trainer.__init__)
    recording = types.ModuleType(f"recording_{namespace}")
    recording.__dict__.update(vars(real))

    def trainer(**kwargs: Any) -> None:
        signature.bind(None, **kwargs)  # raises TypeError on an argument Trainer does not take
        calls.append(kwargs)

    recording.Trainer = trainer
    return recording


@pytest.mark.parametrize("namespace", NAMESPACES)
@pytest.mark.parametrize("name", OPTIONS)
def test_every_trainer_option_reaches_the_trainer(
    name: str, namespace: str, tmp_path: Path
) -> None:
    trainer = importlib.import_module(namespace).Trainer
    assert name in inspect.signature(trainer.__init__).parameters, (
        f"trainer option {name} is not an argument of {namespace}.Trainer"
    )
    value = non_default_value(name)
    container = LightningContainer()
    apply_overrides(container, {name: value}, source="trainer")
    calls: list[dict[str, Any]] = []
    create_trainer(container, _recording_namespace(namespace, calls), tmp_path, NullTracker())
    assert len(calls) == 1
    assert calls[0][name] == value


@pytest.mark.parametrize("option", ["log_level", "debug_ddp"])
def test_runner_settings_come_from_the_schema(option: str) -> None:
    node = resolve(schema()["$defs"]["runner"])["properties"][option]
    assert runner_choices(option) == tuple(node["enum"])
    assert runner_default(option) == node["default"]
    assert getattr(RunSettings(model="X"), option) == node["default"]
    for choice in node["enum"]:
        RunSettings(model="X", **{option: choice})
    action = next(a for a in build_parser(None)._actions if a.dest == option)
    assert action.default == node["default"]
    assert action.metavar == "{" + ",".join(node["enum"]) + "}"


def test_the_runner_docs_list_every_trainer_option() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "runner.md"
    row = next(
        line
        for line in docs.read_text(encoding="utf-8").splitlines()
        if line.startswith("| trainer |")
    )
    assert [name for name in OPTIONS if f"`{name}`" not in row] == []
