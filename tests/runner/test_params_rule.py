"""`params` may not set a trainer option or a field the manifest sets in a section of its own.

`himl validate` reports it (tests/manifests/invalid/params-*.yaml); the runner refuses a run
spec that does it anyway. The list of workflow fields the rule knows
(:data:`~himl_manifest.model.WORKFLOW_FIELDS`) is held equal here to the fields the
runner actually sets from a run spec.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from himl_manifest.errors import ConfigError
from himl_manifest.manifest.schema import resolve, schema
from himl_manifest.manifest.semantic import params_conflict
from himl_manifest.model import WORKFLOW_FIELDS
from himl_manifest.runner.container import LightningContainer, trainer_options
from himl_manifest.runner.fields import container_fields
from himl_manifest.runner.settings import _spec_overrides, from_run_spec
from himl_manifest.spec import RunSpec

RESERVED = sorted({*trainer_options(), *WORKFLOW_FIELDS})


def run_spec(resume_from: str | None = None, **sections: Any) -> RunSpec:
    spec = {"apiVersion": "himl/v1", "kind": "Experiment", "name": "exp"}
    spec.update({"container": "HelloWorld", "seed": 1, **sections})
    return RunSpec("exp", 1, spec, "v1:" + "0" * 64, "exp-s1-00000000", resume_from=resume_from)


def _examples(node: Any) -> list[Any]:
    node = resolve(node)
    found = list(node.get("examples", []))
    for branch in node.get("oneOf", []) + node.get("anyOf", []):
        found += _examples(branch)
    return found


def _richest_specs() -> list[RunSpec]:
    """Run specs that between them set every section the runner reads: one per example of
    every top-level schema property, plus the combinations examples do not show."""
    specs = []
    for key, node in schema()["properties"].items():
        for example in _examples(node):
            source = example.get("source") if isinstance(example, dict) else None
            if key == "checkpoint" and isinstance(source, dict) and "experiment" in source:
                example = {**example, "source": {**source, "run": "pretrain-s0-1234abcd"}}
            specs.append(run_spec(**{key: example}))
    url = {"url": "https://example.org/m.ckpt", "sha256": "a" * 64}
    specs += [
        run_spec(checkpoint={"source": {**url, "trusted": True}}),
        run_spec(checkpoint={"source": url, "resume": True}),
        run_spec(mode="inference", checkpoint={"source": {"run": "other"}}),
        run_spec(resume_from="exp-s1-11111111"),
        run_spec(crossval_count=3, crossval_index=1),  # a fold's run spec
        run_spec(
            datasets=[
                {"azure": "panda:3", "mountpoint": "/mnt/panda"},
                {"datastore": "store", "path": "x/y"},
                {"local": "data/x"},
            ],
            tracking={"experiment": "e", "display_name": "d", "log_from_vm": True},
        ),
    ]
    return specs


def test_workflow_fields_are_the_fields_a_run_spec_sets(tmp_path: Path) -> None:
    set_by_specs: set[str] = set()
    for run in _richest_specs():
        set_by_specs |= set(_spec_overrides(run, tmp_path)) - set(run.spec.get("params", {}))
    set_by_specs -= set(trainer_options())
    # different_seeds is never set from a spec (a manifest lists its seeds) but is reserved too.
    assert set_by_specs == set(WORKFLOW_FIELDS) - {"different_seeds"}


def test_every_base_field_but_the_trainer_options_is_a_workflow_field() -> None:
    """The one list is complete: a field the base container declares (the runner sets it from
    a manifest section, or it is the reference's flag for one) that ``params`` could set would
    bypass its section, as ``params: {src_checkpoint_trusted: true}`` bypassed checkpoint trust."""
    base = {
        name
        for name, field in container_fields(LightningContainer()).items()
        if field.owner is LightningContainer
    }
    assert base - set(trainer_options()) == set(WORKFLOW_FIELDS)


def test_a_parameter_cannot_mark_a_checkpoint_trusted(tmp_path: Path) -> None:
    source = {"url": "https://example.org/m.ckpt", "sha256": "a" * 64}
    run = run_spec(checkpoint={"source": source}, params={"src_checkpoint_trusted": True})
    with pytest.raises(ConfigError, match=r"set it with `checkpoint.source.trusted`"):
        from_run_spec(run, root=tmp_path)
    assert (
        "src_checkpoint_trusted"
        not in from_run_spec(run_spec(checkpoint={"source": source}), root=tmp_path).overrides
    )


def test_workflow_fields_are_container_fields() -> None:
    fields = container_fields(LightningContainer())
    assert set(WORKFLOW_FIELDS) <= set(fields)
    assert all(fields[name].owner is LightningContainer for name in WORKFLOW_FIELDS)


def test_container_parameters_stay_allowed() -> None:
    for name in ("learning_rate", "batch_size"):
        assert params_conflict(name) is None


@pytest.mark.parametrize("name", RESERVED)
def test_the_runner_refuses_params_that_override_the_manifest(name: str, tmp_path: Path) -> None:
    run = run_spec(trainer={"max_epochs": 2}, params={"learning_rate": 0.1, name: 1})
    with pytest.raises(ConfigError, match=rf"params\.{name}: set it (under|with) `"):
        from_run_spec(run, root=tmp_path)


def test_the_issue_case_is_refused_with_both_fields_named(tmp_path: Path) -> None:
    run = run_spec(trainer={"max_epochs": 2}, params={"max_epochs": 50, "resume_training": True})
    with pytest.raises(ConfigError) as caught:
        from_run_spec(run, root=tmp_path)
    message = str(caught.value)
    assert "params.max_epochs: set it under `trainer:`" in message
    assert "params.resume_training: set it with `checkpoint.resume`" in message


def test_params_of_the_container_itself_still_become_overrides(tmp_path: Path) -> None:
    run = run_spec(trainer={"max_epochs": 2}, params={"learning_rate": 0.1})
    overrides = from_run_spec(run, root=tmp_path).overrides
    assert (overrides["max_epochs"], overrides["learning_rate"]) == (2, 0.1)


def test_the_manifest_docs_name_every_reserved_field() -> None:
    docs = Path(__file__).resolve().parents[2] / "docs" / "manifest.md"
    section = docs.read_text(encoding="utf-8").split("## What `params` may set", 1)[1]
    section = section.split("\n## ", 1)[0]
    assert [name for name in WORKFLOW_FIELDS if f"`{name}`" not in section] == []


@pytest.mark.parametrize(
    ("name", "section"),
    [("crossval_count", "crossval.folds"), ("crossval_index", "crossval.indices")],
)
def test_params_may_not_set_the_fold(name: str, section: str, tmp_path: Path) -> None:
    assert params_conflict(name) == (
        f"set it with `{section}`",
        "the manifest sets this field itself; params may not override it",
    )
    run = run_spec(trainer={"max_epochs": 2}, params={name: 2})
    with pytest.raises(ConfigError, match=rf"params\.{name}: set it with `{section}`"):
        from_run_spec(run, root=tmp_path)
