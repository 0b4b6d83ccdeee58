"""A saved plan is applied only as it was made: edited, truncated or foreign plan files are
refused, by name, through the real CLI (in-memory backend: nothing trains)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from apply_helpers import commit, himl, write_manifest

from himl_manifest.plan.serialize import content_digest
from himl_manifest.spec import RunSpec, run_name, spec_hash


def _saved(repo: Path) -> dict[str, Any]:
    write_manifest(repo, seeds=[0, 1])
    commit(repo, "two seeds")
    made = himl(repo, "plan", "--backend", "memory", "-o", "plan.json")
    assert made.returncode == 0, made.stderr
    return json.loads((repo / "plan.json").read_text(encoding="utf-8"))


def _write(repo: Path, document: dict[str, Any], *, digest: bool = True) -> None:
    if digest:
        document["digest"] = content_digest(document)
    (repo / "plan.json").write_text(json.dumps(document, indent=2), encoding="utf-8")


def _apply(repo: Path) -> str:
    done = himl(repo, "apply", "plan.json", "--backend", "memory", "--yes")
    assert done.returncode == 1, done.stderr
    assert "Apply complete" not in done.stderr
    assert "YAML" not in done.stderr and "manifest error" not in done.stderr
    return done.stderr


def _edit_epochs(document: dict[str, Any]) -> dict[str, Any]:
    """The first action's run spec asks for more epochs (its names left as they were)."""
    run = document["actions"][0]["run"]
    run["spec"]["trainer"]["max_epochs"] = 50
    return run


def test_an_edited_spec_is_refused_even_with_a_fixed_digest(repo: Path) -> None:
    document = _saved(repo)
    _edit_epochs(document)
    _write(repo, document)
    err = _apply(repo)
    assert "plan.json" in err and "does not match its spec hash" in err


def test_an_edited_spec_with_its_hash_redone_keeps_no_old_name(repo: Path) -> None:
    document = _saved(repo)
    run = _edit_epochs(document)
    run["spec_hash"] = spec_hash(RunSpec.from_json(json.dumps(run)).identity())
    document["actions"][0]["spec_hash"] = run["spec_hash"]
    _write(repo, document)
    assert "is not the name its spec gives" in _apply(repo)


def test_a_consistently_rewritten_plan_is_not_what_the_manifests_give(repo: Path) -> None:
    """Hash, name and digest all redone: the plan is self-consistent, but apply re-plans from
    the manifests and finds other actions."""
    document = _saved(repo)
    run = _edit_epochs(document)
    run["spec_hash"] = spec_hash(RunSpec.from_json(json.dumps(run)).identity())
    run["run_name"] = run_name(run["experiment"], run["seed"], run["spec_hash"])
    action = document["actions"][0]
    action["spec_hash"], action["run_name"] = run["spec_hash"], run["run_name"]
    _write(repo, document)
    err = _apply(repo)
    assert "actions are not what its manifests give now" in err
    assert run["run_name"] in err or "hello-s0" in err


def test_a_cosmetic_edit_is_refused_too(repo: Path) -> None:
    document = _saved(repo)
    document["actions"][0]["run"]["spec"]["description"] = "not what was planned"
    _write(repo, document)
    assert "actions are not what its manifests give now" in _apply(repo)


def test_an_edit_without_a_new_digest_is_refused(repo: Path) -> None:
    document = _saved(repo)
    document["actions"][0]["reason"] = "edited"
    _write(repo, document, digest=False)
    err = _apply(repo)
    assert "plan.json" in err and "does not match its digest" in err


def test_a_truncated_plan_is_named_as_one(repo: Path) -> None:
    _saved(repo)
    text = (repo / "plan.json").read_text(encoding="utf-8")
    (repo / "plan.json").write_text(text[: len(text) // 2], encoding="utf-8")
    err = _apply(repo)
    assert "plan.json: not a saved plan: not valid JSON" in err and "cut short" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.pop("version"), "has no version"),
        (lambda d: d.pop("digest"), "has no digest"),
        (lambda d: d.update(format="something/v1"), "not a saved plan (format 'something/v1'"),
    ],
    ids=["no-version", "no-digest", "other-format"],
)
def test_a_plan_that_is_not_one_is_named(repo: Path, change: Any, message: str) -> None:
    document = _saved(repo)
    change(document)
    _write(repo, document, digest=False)
    assert message in _apply(repo)


def test_a_json_file_that_is_no_plan_at_all(repo: Path) -> None:
    (repo / "plan.json").write_text('["a", "list"]\n', encoding="utf-8")
    assert "plan.json: not a saved plan (format None" in _apply(repo)
