"""The neutral model: enums, seed expansion and checkpoint-source parsing agree with the schema."""

from __future__ import annotations

import pytest

from himl_manifest.manifest.schema import resolve, schema
from himl_manifest.model import (
    DEFAULT_SEEDS,
    IN_PROGRESS,
    TERMINAL,
    ActionKind,
    CheckpointSource,
    Lifecycle,
    RunRecord,
    RunStatus,
    checkpoint_source,
    parse_enum,
    seed_list,
)


def test_default_seeds_are_the_schemas() -> None:
    assert list(DEFAULT_SEEDS) == schema()["properties"]["seeds"]["default"]


@pytest.mark.parametrize(
    ("seeds", "expected"),
    [(3, [0, 1, 2]), ([7, 1], [7, 1]), (None, [42]), (True, [42])],
)
def test_seed_list(seeds: object, expected: list[int]) -> None:
    assert seed_list(seeds) == expected


def test_every_schema_checkpoint_source_kind_is_parsed() -> None:
    branches = resolve(schema()["$defs"]["checkpoint"])["properties"]["source"]["oneOf"]
    kinds = {next(iter(branch["required"])) for branch in branches}
    parsed = {
        "path": checkpoint_source({"checkpoint": {"source": {"path": "a.ckpt"}}}),
        "url": checkpoint_source({"checkpoint": {"source": {"url": "https://x/a", "sha256": "0"}}}),
        "run": checkpoint_source({"checkpoint": {"source": {"run": "r-s0-1:best.ckpt"}}}),
        "experiment": checkpoint_source(
            {"checkpoint": {"source": {"experiment": "pre", "seed": 1, "run": "pre-s1-2"}}}
        ),
    }
    assert set(parsed) == kinds
    assert parsed["run"] == CheckpointSource("run", run="r-s0-1:best.ckpt")
    assert parsed["run"].run_name == "r-s0-1"
    experiment = parsed["experiment"]
    assert experiment is not None and experiment.run_reference() == "pre-s1-2:last.ckpt"
    assert parsed["url"] is not None and parsed["url"].sha256 == "0"


@pytest.mark.parametrize("spec", [{}, {"checkpoint": {}}, {"checkpoint": {"source": "x"}}])
def test_no_source(spec: dict[str, object]) -> None:
    assert checkpoint_source(spec) is None


def test_enums_are_their_values_and_sets_partition_statuses() -> None:
    assert RunStatus.QUEUED == "queued" and str(Lifecycle.ACTIVE) == "active"
    assert set(RunStatus) == IN_PROGRESS | TERMINAL and not IN_PROGRESS & TERMINAL
    assert parse_enum(ActionKind, "create", "kind") is ActionKind.CREATE
    with pytest.raises(ValueError, match="unknown kind 'nope': expected one of create"):
        parse_enum(ActionKind, "nope", "kind")


def test_a_record_decodes_its_spec_only_when_read() -> None:
    record = RunRecord("r", "id", "e", 0, "v1:x", RunStatus.COMPLETED, '{"spec": {"name": "e"}}')
    assert "spec" not in record.__dict__
    assert record.spec == {"name": "e"}
    assert "spec" in record.__dict__


def test_provenance_reads_stored_facts_typed() -> None:
    from himl_manifest.model import Provenance

    stored = {
        "head_commit": "a" * 40,
        "manifest_commit": "",
        "manifest_commit_unknown": "shallow clone",
        "dirty": "true",
        "worktree_dirty": "False",
        "applied_by": "ci-bot",
        "conda_sha256": "",
    }
    facts = Provenance.of(stored)
    assert (facts.dirty, facts.worktree_dirty) == (True, False)
    assert facts.manifest_commit is None and facts.commit == "a" * 40
    assert facts.manifest_commit_unknown == "shallow clone" and facts.branch is None
    assert Provenance.of({}).dirty is None
