"""Run identity (himl_manifest.spec): what changes the spec hash, what does not, run names."""

from __future__ import annotations

import copy
import random
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from himl_manifest.manifest.build import normalize
from himl_manifest.spec import Experiment, RunSpec, expand

BASE: dict[str, Any] = {
    "apiVersion": "himl/v1",
    "kind": "Experiment",
    "name": "base",
    "description": "words",
    "tags": {"team": "a"},
    "container": "HelloWorld",
    "params": {"lr": 0.1, "sizes": [1, 2]},
    "seeds": [0, 1],
    "trainer": {"max_epochs": 3, "precision": "32-true", "devices": 1},
    "datasets": [{"azure": "panda:3", "mode": "mount"}],
    "compute": {"target": "gpu-cluster", "num_nodes": 2},
    "environment": {"conda_file": "environment.yml", "image": "img:1"},
    "tracking": {"experiment": "exp", "display_name": "shown"},
    "runner": {"log_level": "INFO"},
    "retry": {"on_failure": True},
}
COSMETIC = [
    (("description",), "other words"),
    (("tags", "team"), "b"),
    (("tags", "new"), "x"),
    (("tracking", "display_name"), "renamed"),
    (("retry", "max_attempts"), 9),
]
RUN_AFFECTING = [
    (("container",), "Other"),
    (("params", "lr"), 0.2),
    (("params", "sizes"), [2, 1]),
    (("params", "new"), None),
    (("mode",), "inference"),
    (("model_variant",), "large"),
    (("trainer", "max_epochs"), 4),
    (("trainer", "precision"), "bf16-mixed"),
    (("trainer", "devices"), "auto"),
    (("datasets", 0, "mode"), "download"),
    (("compute", "num_nodes"), 3),
    (("compute", "target"), "other-cluster"),
    (("environment", "image"), "img:2"),
    (("tracking", "experiment"), "exp2"),
    (("runner", "log_level"), "DEBUG"),
    (("code_root",), "src"),
    (("checkpoint",), {"source": {"path": "a.ckpt"}}),
]


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def _runs(root: Path, *documents: dict[str, Any]) -> list[RunSpec]:
    experiments = [
        Experiment(d["name"], normalize(d), f"{d['name']}.yaml", root) for d in documents
    ]
    return expand(experiments)


def _hashes(root: Path, document: dict[str, Any]) -> list[str]:
    return [run.spec_hash for run in _runs(root, document)]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.11]\n")
    return tmp_path


def test_hash_is_versioned_and_per_seed(root: Path) -> None:
    hashes = _hashes(root, BASE)
    assert len(hashes) == 2 and len(set(hashes)) == 2
    assert all(re.fullmatch(r"v2:[0-9a-f]{64}", h) for h in hashes)


@pytest.mark.parametrize("path,value", COSMETIC, ids=lambda v: str(v))
def test_cosmetic_fields_keep_the_hash(root: Path, path: tuple[Any, ...], value: Any) -> None:
    assert _hashes(root, _set(BASE, path, value)) == _hashes(root, BASE)


@pytest.mark.parametrize("path,value", RUN_AFFECTING, ids=lambda v: str(v))
def test_run_affecting_fields_change_the_hash(
    root: Path, path: tuple[Any, ...], value: Any
) -> None:
    changed = _hashes(root, _set(BASE, path, value))
    assert all(a != b for a, b in zip(changed, _hashes(root, BASE), strict=True))


def test_defaults_make_explicit_and_implicit_equal(root: Path) -> None:
    explicit = _set(BASE, ("mode",), "train")
    explicit = _set(explicit, ("trainer", "accelerator"), "auto")
    assert _hashes(root, explicit) == _hashes(root, BASE)
    assert _hashes(root, _set(BASE, ("seeds",), 2)) == _hashes(root, BASE)


def test_conda_file_content_changes_the_hash(root: Path) -> None:
    before = _hashes(root, BASE)
    (root / "environment.yml").write_text("dependencies: [python=3.12]\n")
    assert set(_hashes(root, BASE)).isdisjoint(before)


def _shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_shuffled(v, rng) for v in value]
    return value


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), flow=st.booleans(), indent=st.integers(2, 6))
def test_key_order_comments_and_formatting_do_not_matter(
    tmp_path_factory: pytest.TempPathFactory, seed: int, flow: bool, indent: int
) -> None:
    root = tmp_path_factory.getbasetemp()
    rng = random.Random(seed)
    text = yaml.safe_dump(
        _shuffled(BASE, rng), default_flow_style=flow, indent=indent, sort_keys=False, width=40
    )
    text = "# a comment\n" + text.replace("\n", "  # trailing comment\n", 1)
    assert _hashes(root, yaml.safe_load(text)) == _hashes(root, BASE)


@settings(max_examples=40, deadline=None)
@given(
    max_epochs=st.integers(1, 100000),
    lr=st.floats(allow_nan=False, allow_infinity=False),
    seeds=st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4, unique=True),
)
def test_run_names_are_slugs_and_deterministic(
    tmp_path_factory: pytest.TempPathFactory, max_epochs: int, lr: float, seeds: list[int]
) -> None:
    root = tmp_path_factory.getbasetemp()
    document = _set(_set(BASE, ("trainer", "max_epochs"), max_epochs), ("params", "lr"), lr)
    document["seeds"] = seeds
    first = [r.run_name for r in _runs(root, document)]
    assert first == [r.run_name for r in _runs(root, copy.deepcopy(document))]
    for name, seed in zip(first, seeds, strict=True):
        assert re.fullmatch(r"[a-z0-9-]+", name)
        assert name.startswith(f"base-s{seed}-")
    baseline = {r.spec_hash for r in _runs(root, BASE)}
    if max_epochs != 3 or lr != 0.1:
        assert baseline.isdisjoint(r.spec_hash for r in _runs(root, document))


def test_runspec_json_round_trip(root: Path) -> None:
    for run in _runs(root, BASE):
        again = RunSpec.from_json(run.to_json())
        assert again == run
        assert again.identity() == run.identity()


def test_expand_orders_upstream_first_and_resolves_sources(root: Path) -> None:
    finetune = _set(BASE, ("name",), "finetune")
    finetune["checkpoint"] = {"source": {"experiment": "pretrain", "seed": 1}}
    pretrain = _set(BASE, ("name",), "pretrain")
    runs = _runs(root, finetune, pretrain)
    assert [r.experiment for r in runs] == ["pretrain", "pretrain", "finetune", "finetune"]
    upstream = next(r for r in runs if r.experiment == "pretrain" and r.seed == 1)
    assert runs[2].spec["checkpoint"]["source"]["run"] == upstream.run_name
    # The upstream run's identity is part of the dependent's: changing pretrain re-plans it.
    changed = _runs(root, finetune, _set(pretrain, ("trainer", "max_epochs"), 9))
    assert changed[2].spec_hash != runs[2].spec_hash


def test_the_legacy_hash_is_what_v1_gave(tmp_path: Path) -> None:
    # pinned from the v1 implementation (himl-manifest before code identity), same inputs: a
    # run recorded under v1 is recognised as still matching its manifest
    (tmp_path / "environment.yml").write_text("dependencies: [python=3.11]\n")
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": "pinned",
        "container": "HelloWorld",
        "seeds": [0],
        "trainer": {"max_epochs": 3},
        "compute": {"target": "gpu-cluster"},
    }
    (run,) = _runs(tmp_path, document)
    assert run.legacy_hash == (
        "v1:b2748da1cf3238e06296bda447fb7bfbce2e887a9123961a8e95b54dc00af0d8"
    )
    assert run.spec_hash.startswith("v2:")
    assert RunSpec.from_json(run.to_json()).legacy_hash is None  # not serialized: unknown


def test_conda_counts_for_cluster_runs_only_and_by_meaning(root: Path) -> None:
    local = _set(BASE, ("compute",), {"target": "local"})
    cluster_before, local_before = _hashes(root, BASE), _hashes(root, local)
    (root / "environment.yml").write_text("# a comment\ndependencies:\n  - python=3.11  # why\n")
    assert _hashes(root, BASE) == cluster_before and _hashes(root, local) == local_before
    (root / "environment.yml").write_text("dependencies: [python=3.11, numpy]\n")
    assert set(_hashes(root, BASE)).isdisjoint(cluster_before)
    assert _hashes(root, local) == local_before
    # a local run's environment section does not count at all
    assert _hashes(root, _set(local, ("environment", "image"), "img:9")) == local_before
