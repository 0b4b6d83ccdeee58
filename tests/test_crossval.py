"""Cross-validation as runs: the `crossval` section, expansion into (seed, fold) runs, their
identity and names, the planner over folds, checkpoint sources between experiments with folds,
and what `himl validate` says about them. Pure and fast: real manifests, the real planner over
the in-memory backend."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.errors import ConfigError
from himl_manifest.manifest.build import normalize
from himl_manifest.manifest.validate import validate_paths
from himl_manifest.model import SUBMITTING, ActionKind, Lifecycle, without_cosmetic
from himl_manifest.plan.model import Plan
from himl_manifest.plan.planner import plan
from himl_manifest.plan.serialize import plan_from_json, plan_to_json
from himl_manifest.spec import Experiment, RunSpec, expand, identity_view, spec_hash

#: No environment.yml and no git: nothing is read from disk.
ROOT = Path("/nonexistent/himl-crossval-tests")


def document(name: str = "cv", **fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": name,
        "container": "HelloWorld",
        "seeds": [0, 1],
        "trainer": {"max_epochs": 3},
        "code": {"track": False},
    }
    doc.update(fields)
    return doc


def experiment(name: str = "cv", **fields: Any) -> Experiment:
    spec = normalize(document(name, **fields))
    return Experiment(name=name, spec=spec, manifest_path=f"experiments/{name}.yaml", root=ROOT)


# --- expansion, names, identity -------------------------------------------------------------------


def test_normalize_spells_the_folds_out() -> None:
    assert normalize(document(crossval={"folds": 3}))["crossval"] == {
        "folds": 3,
        "indices": [0, 1, 2],
    }
    assert normalize(document(crossval={"folds": 4, "indices": [3, 1]}))["crossval"] == {
        "folds": 4,
        "indices": [1, 3],
    }
    assert "crossval" not in normalize(document())


def test_one_run_per_seed_and_fold_each_with_its_own_name() -> None:
    runs = expand([experiment(crossval={"folds": 3})])
    assert [(r.seed, r.fold) for r in runs] == [(s, f) for s in (0, 1) for f in (0, 1, 2)]
    for run in runs:
        assert re.fullmatch(rf"cv-s{run.seed}-f{run.fold}-[0-9a-f]{{8}}", run.run_name)
        assert run.run_name.endswith(run.spec_hash.split(":")[1][:8])
        assert (run.spec["seed"], run.spec["crossval_count"], run.spec["crossval_index"]) == (
            run.seed,
            3,
            run.fold,
        )
        assert "crossval" not in run.spec and "seeds" not in run.spec
        assert spec_hash(run.identity()) == run.spec_hash  # the spec alone gives the hash
    assert len({r.run_name for r in runs}) == len({r.spec_hash for r in runs}) == 6


def test_runs_without_crossval_keep_their_names_and_hashes() -> None:
    """The hash of a run without folds is what it was before cross-validation existed: the
    manifest without ``seeds``, cosmetic and policy fields, plus its seed."""
    exp = experiment()
    for run in expand([exp]):
        old_view = without_cosmetic({k: v for k, v in exp.spec.items() if k != "seeds"})
        old_view["seed"] = run.seed
        old_view.pop("environment", None)  # a local run
        old_view["code"] = {"track": False}
        assert run.spec_hash == spec_hash(old_view)
        assert run.run_name == f"cv-s{run.seed}-{run.spec_hash[3:11]}"
        assert run.fold is None and "crossval_index" not in run.spec


def test_the_fold_count_is_identity_the_list_of_folds_is_not() -> None:
    three = {r.fold: r for r in expand([experiment(seeds=[0], crossval={"folds": 3})])}
    some = {
        r.fold: r for r in expand([experiment(seeds=[0], crossval={"folds": 3, "indices": [0, 2]})])
    }
    four = {r.fold: r for r in expand([experiment(seeds=[0], crossval={"folds": 4})])}
    assert list(some) == [0, 2]
    assert all(some[f].run_name == three[f].run_name for f in some)
    assert all(four[f].spec_hash != three[f].spec_hash for f in three)


def test_the_fold_identity_view_holds_both_fields() -> None:
    run = expand([experiment(seeds=[5], crossval={"folds": 2, "indices": [1]})])[0]
    view = run.identity()
    assert (view["seed"], view["crossval_count"], view["crossval_index"]) == (5, 2, 1)
    assert "crossval" not in view
    spec = {k: v for k, v in run.spec.items() if k != "seed"}
    assert identity_view(spec, 5, None) == view


def test_a_run_spec_file_keeps_its_fold_and_an_old_one_still_loads() -> None:
    run = expand([experiment(crossval={"folds": 2})])[3]
    back = RunSpec.from_json(run.to_json())
    assert back == run and back.fold == 1
    assert json.loads(run.to_json())["fold"] == 1
    old = json.loads(expand([experiment()])[0].to_json())
    del old["fold"]  # written before folds existed
    assert RunSpec.from_json(json.dumps(old)).fold is None


def test_a_saved_plan_with_fold_runs_reads_back() -> None:
    desired = expand([experiment(crossval={"folds": 2})])
    saved = plan(desired, [])
    back = plan_from_json(plan_to_json(saved))
    assert [a.run_name for a in back.actions] == [a.run_name for a in saved.actions]


# --- the planner over folds -----------------------------------------------------------------------


def apply_all(result: Plan, backend: MemoryBackend) -> None:
    for action in result.actions:
        if action.kind in SUBMITTING:
            assert action.run is not None
            backend.submit([action.run], attempts={action.run_name: action.attempt})
            backend.wait([action.run_name])
        if action.previous not in (None, action.run_name) and action.kind in SUBMITTING:
            assert action.previous is not None
            backend.set_state(action.previous, Lifecycle.SUPERSEDED)


def kinds(result: Plan) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for action in result.actions:
        found.setdefault(str(action.kind), []).append(action.run_name)
    return found


def test_adding_a_fold_plans_one_new_run_per_seed() -> None:
    backend = MemoryBackend()
    before = expand([experiment(crossval={"folds": 4, "indices": [0, 1, 2]})])
    apply_all(plan(before, []), backend)
    assert not plan(before, backend.list_runs()).has_changes
    after = expand([experiment(crossval={"folds": 4})])
    found = kinds(plan(after, backend.list_runs()))
    assert sorted(found) == ["create", "keep"]
    assert sorted(found["create"]) == sorted(r.run_name for r in after if r.fold == 3)
    assert len(found["create"]) == 2 and len(found["keep"]) == 6


def test_raising_the_fold_count_replaces_every_fold_and_adds_one_per_seed() -> None:
    """3 -> 4 folds re-splits the data: every fold's validation set changes."""
    backend = MemoryBackend()
    apply_all(plan(expand([experiment(crossval={"folds": 3})]), []), backend)
    result = plan(expand([experiment(crossval={"folds": 4})]), backend.list_runs())
    found = kinds(result)
    assert sorted(found) == ["create", "replace"]
    assert len(found["replace"]) == 6 and len(found["create"]) == 2
    replaced = [a for a in result.actions if a.kind == ActionKind.REPLACE]
    for action in replaced:
        changes = {c.path: (c.old, c.new) for c in action.changes}
        assert changes["crossval_count"] == (3, 4)
        assert action.previous is not None
        assert action.previous.split("-")[2] == action.run_name.split("-")[2]  # the same fold


def test_a_fold_dropped_is_an_orphan_and_the_others_are_kept() -> None:
    backend = MemoryBackend()
    apply_all(plan(expand([experiment(crossval={"folds": 3})]), []), backend)
    result = plan(
        expand([experiment(crossval={"folds": 3, "indices": [0, 1]})]), backend.list_runs()
    )
    found = kinds(result)
    assert len(found["keep"]) == 4 and len(found["orphan"]) == 2
    orphans = [a for a in result.actions if a.kind == ActionKind.ORPHAN]
    assert all("fold 2 of seed" in a.reason for a in orphans)


def test_turning_crossval_on_keeps_the_run_without_folds_as_an_orphan() -> None:
    backend = MemoryBackend()
    apply_all(plan(expand([experiment()]), []), backend)
    found = kinds(plan(expand([experiment(crossval={"folds": 2})]), backend.list_runs()))
    assert len(found["create"]) == 4 and len(found["orphan"]) == 2


# --- checkpoint sources from experiments with folds -----------------------------------------------


def source_runs(*experiments: Experiment) -> dict[tuple[int, int | None], str]:
    return {
        (run.seed, run.fold): run.spec["checkpoint"]["source"]["run"]
        for run in expand(experiments)
        if run.experiment == "tune"
    }


def upstream_names() -> dict[int | None, str]:
    return {
        r.fold: r.run_name
        for r in expand([experiment("pre", crossval={"folds": 3})])
        if r.seed == 0
    }


def test_each_fold_starts_from_the_same_fold_of_its_source() -> None:
    pre = experiment("pre", crossval={"folds": 3})
    tune = experiment("tune", crossval={"folds": 3}, checkpoint={"source": {"experiment": "pre"}})
    names = upstream_names()
    # the source's first seed (0), fold i for fold i, every seed of the dependent
    assert source_runs(pre, tune) == {(s, f): names[f] for s in (0, 1) for f in (0, 1, 2)}


def test_a_named_fold_is_used_by_every_run() -> None:
    pre = experiment("pre", crossval={"folds": 3})
    tune = experiment("tune", checkpoint={"source": {"experiment": "pre", "fold": 2}})
    assert set(source_runs(pre, tune).values()) == {upstream_names()[2]}


def test_a_source_without_folds_serves_every_fold() -> None:
    pre = experiment("pre")
    tune = experiment("tune", crossval={"folds": 2}, checkpoint={"source": {"experiment": "pre"}})
    upstream = next(r.run_name for r in expand([pre]) if r.seed == 0)
    assert set(source_runs(pre, tune).values()) == {upstream}


@pytest.mark.parametrize(
    ("pre_fields", "tune_fields", "message"),
    [
        ({"crossval": {"folds": 3}}, {}, r"has 3 cross-validation folds: name the one"),
        ({"crossval": {"folds": 3}}, {"crossval": {"folds": 2}}, r"has 3 cross-validation folds"),
        ({}, {"fold": 1}, r"checkpoint.source.fold: experiment 'pre' has no cross-validation"),
        ({"crossval": {"folds": 3, "indices": [0]}}, {"fold": 2}, r"runs no fold 2"),
    ],
)
def test_an_ambiguous_fold_source_is_refused(
    pre_fields: dict[str, Any], tune_fields: dict[str, Any], message: str
) -> None:
    source: dict[str, Any] = {"experiment": "pre"}
    if "fold" in tune_fields:
        source["fold"] = tune_fields.pop("fold")
    pre = experiment("pre", **pre_fields)
    tune = experiment("tune", checkpoint={"source": source}, **tune_fields)
    with pytest.raises(ConfigError, match=message) as caught:
        expand([pre, tune])
    assert "experiments/tune.yaml" in str(caught.value)


# --- himl validate --------------------------------------------------------------------------------


def validate(repo: Path, *documents: dict[str, Any]) -> list[str]:
    path = repo / "experiments" / "cv.yaml"
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False), encoding="utf-8")
    result = validate_paths([path])
    return [f"{d.line}: {d.path}: {d.message}" for d in result.diagnostics]


def test_valid_crossval_manifests(repo: Path) -> None:
    assert validate(repo, document(crossval={"folds": 5})) == []
    assert validate(repo, document(crossval={"folds": 5, "indices": [0, 4]})) == []


@pytest.mark.parametrize(
    ("crossval", "expected"),
    [
        ({"folds": 1}, "crossval.folds: invalid value 1: is less than the minimum of 2"),
        ({"folds": 3, "indices": [0, 3]}, "crossval.indices[1]: fold 3 does not exist"),
        ({"folds": 3, "indices": [1, 1]}, "crossval.indices[1]: fold 1 is listed twice"),
        ({"indices": [0]}, "crossval: missing required key 'folds'"),
        ({"folds": 3, "fold": 1}, "crossval"),
    ],
)
def test_bad_crossval_sections_are_reported_with_their_line(
    repo: Path, crossval: dict[str, Any], expected: str
) -> None:
    found = validate(repo, document(crossval=crossval))
    assert len(found) == 1 and expected in found[0], found
    assert int(found[0].split(":")[0]) > 0  # a line of the file


@pytest.mark.parametrize(
    ("name", "section"),
    [("crossval_count", "crossval.folds"), ("crossval_index", "crossval.indices")],
)
def test_params_may_not_set_the_fold_fields(repo: Path, name: str, section: str) -> None:
    (found,) = validate(repo, document(params={name: 2}))
    assert f"params.{name}: set it with `{section}`" in found


def test_fold_sources_are_checked_by_validate(repo: Path) -> None:
    pre = document("pre", crossval={"folds": 3})
    tune = document("tune", checkpoint={"source": {"experiment": "pre"}})
    (found,) = validate(repo, pre, tune)
    assert "checkpoint.source.experiment: experiment 'pre' has 3 cross-validation folds" in found
    tune["checkpoint"]["source"]["fold"] = 7
    (found,) = validate(repo, pre, tune)
    assert "checkpoint.source.fold: experiment 'pre' runs no fold 7" in found
    tune["checkpoint"]["source"]["fold"] = 1
    assert validate(repo, pre, tune) == []
    same = document("tune", crossval={"folds": 3}, checkpoint={"source": {"experiment": "pre"}})
    assert validate(repo, pre, same) == []
