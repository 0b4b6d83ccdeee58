"""Plans as JSON: the ``himl-plan/v1`` document of ``plan --format json`` and of saved plans.

One format serves both. A saved plan (``himl plan -o plan.json``) also carries each action's
full run spec under ``"run"``, so ``himl apply plan.json`` executes exactly what was shown; the
``--format json`` output leaves the run specs out. The format is documented field by field in
``docs/plan.md``; readers refuse another ``format`` or a newer ``version``.

A saved plan is verified when read: its ``digest`` (sha256 of the canonical JSON of the rest of
the document) must match, so an edited or truncated file is refused, and every action's run
name and spec hash are derived again from its run spec (:func:`verify_run`), so no edit of a
run spec can run under another spec's name.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from himl_manifest.errors import ConfigError
from himl_manifest.model import ActionKind
from himl_manifest.plan.model import (
    KIND_ORDER,
    PLAN_FORMAT_VERSION,
    SYMBOLS,
    Action,
    ExperimentStatus,
    FieldChange,
    Plan,
)
from himl_manifest.spec import RunSpec, canonical_json, run_name, spec_hash

PLAN_FORMAT = "himl-plan/v1"


def summary(plan: Plan) -> dict[str, Any]:
    """Counts per kind (every kind, zeros included) and whether anything would change."""
    counts: dict[str, Any] = {kind: plan.count(kind) for kind in KIND_ORDER}
    counts["has_changes"] = plan.has_changes
    return counts


def action_to_dict(action: Action, *, include_run: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "kind": action.kind,
        "symbol": SYMBOLS[action.kind],
        "experiment": action.experiment,
        "seed": action.seed,
        "run_name": action.run_name,
        "reason": action.reason,
        "changes": [{"path": c.path, "old": c.old, "new": c.new} for c in action.changes],
        "previous": action.previous,
        "attempt": action.attempt,
        "depends_on": list(action.depends_on),
        "blocked": action.blocked,
        "manifest_path": action.manifest_path,
        "observed_status": action.observed_status,
        "spec_hash": action.run.spec_hash if action.run is not None else None,
    }
    if include_run:
        out["run"] = json.loads(action.run.to_json()) if action.run is not None else None
    return out


def plan_document(plan: Plan, *, include_runs: bool) -> dict[str, Any]:
    """The ``himl-plan/v1`` document of a plan, as plain JSON data."""
    return {
        "format": PLAN_FORMAT,
        "version": plan.version,
        "fingerprint": plan.fingerprint,
        "meta": plan.meta,
        "summary": summary(plan),
        "experiments": [
            {
                "name": status.experiment,
                "manifest_path": status.manifest_path,
                "in_sync": status.in_sync,
                "health": status.health,
            }
            for status in plan.experiments
        ],
        "actions": [action_to_dict(a, include_run=include_runs) for a in plan.actions],
        "warnings": list(plan.warnings),
    }


def content_digest(document: dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a plan document, its ``digest`` key left out."""
    body = {k: v for k, v in document.items() if k != "digest"}
    return "sha256:" + hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()


def plan_to_json(plan: Plan) -> str:
    """A saved plan: the whole plan, every action's run spec included, and its digest."""
    document = plan_document(plan, include_runs=True)
    document["digest"] = content_digest(document)
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def verify_run(run: RunSpec, where: str) -> None:
    """Refuse a run spec whose spec hash or run name is not the one its content gives."""
    derived = spec_hash(run.identity())
    if derived != run.spec_hash:
        raise ConfigError(
            f"{where}: run {run.run_name}: its spec does not match its spec hash (edited after "
            "`himl plan -o`?): refused; change the manifests and plan again"
        )
    name = run_name(run.experiment, run.seed, derived, run.fold)
    if name != run.run_name:
        raise ConfigError(
            f"{where}: run name {run.run_name!r} is not the name its spec gives ({name!r}): "
            "refused; change the manifests and plan again"
        )


def plan_from_json(text: str) -> Plan:
    """Read a saved plan back (ConfigError when it is not one, or of an unknown version)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"saved plan is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or document.get("format") != PLAN_FORMAT:
        found = document.get("format") if isinstance(document, dict) else None
        raise ConfigError(f"not a saved plan: format {found!r}, expected {PLAN_FORMAT!r}")
    version = document.get("version")
    if version is None:
        raise ConfigError("saved plan has no version: not a plan saved by `himl plan -o FILE`")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"saved plan has a bad version {version!r}: plan again")
    if version > PLAN_FORMAT_VERSION:
        raise ConfigError(
            f"saved plan version {version!r} is newer than this himl understands "
            f"({PLAN_FORMAT_VERSION})"
        )
    if "actions" in document and "digest" not in document:
        raise ConfigError(
            "saved plan has no digest: it was not written by `himl plan -o FILE` (or by an older "
            "himl); plan again"
        )
    if "digest" in document and document["digest"] != content_digest(document):
        raise ConfigError(
            "saved plan does not match its digest: it was edited or cut short after "
            "`himl plan -o`; refused. Change the manifests and plan again"
        )
    try:
        actions = tuple(_action(item) for item in document["actions"])
        experiments = tuple(
            ExperimentStatus(
                experiment=item["name"],
                in_sync=bool(item["in_sync"]),
                health=item["health"],
                manifest_path=item.get("manifest_path", ""),
            )
            for item in document.get("experiments", [])
        )
        return Plan(
            actions=actions,
            fingerprint=document["fingerprint"],
            experiments=experiments,
            version=version,
            meta=dict(document.get("meta") or {}),
            warnings=tuple(str(w) for w in document.get("warnings") or ()),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"saved plan is missing or has a bad field: {exc!r}") from exc


def _action(item: dict[str, Any]) -> Action:
    kind = item["kind"]
    if kind not in SYMBOLS:
        raise ValueError(f"unknown action kind {kind!r}")
    if "run" not in item:
        raise ConfigError(
            "this plan has no run specs (it is `himl plan --format json` output): "
            "save a plan to apply with `himl plan -o FILE`"
        )
    run = RunSpec.from_json(json.dumps(item["run"])) if item["run"] is not None else None
    if run is None and kind != ActionKind.ORPHAN:
        raise ValueError(f"{kind} action for {item['run_name']} has no run spec")
    if run is not None:
        where = f"saved plan, {kind} action of {item['run_name']}"
        verify_run(run, where)
        if item["run_name"] != run.run_name or item.get("spec_hash") != run.spec_hash:
            raise ConfigError(f"{where}: its run name or spec hash is not its run spec's: refused")
        if (item["experiment"], int(item["seed"])) != (run.experiment, run.seed):
            raise ConfigError(f"{where}: its experiment or seed is not its run spec's: refused")
    return Action(
        kind=kind,
        experiment=item["experiment"],
        seed=int(item["seed"]),
        run_name=item["run_name"],
        reason=item["reason"],
        changes=tuple(FieldChange(c["path"], c["old"], c["new"]) for c in item["changes"]),
        run=run,
        previous=item.get("previous"),
        attempt=int(item.get("attempt", 1)),
        depends_on=tuple(item.get("depends_on", ())),
        blocked=str(item.get("blocked") or ""),
        manifest_path=item.get("manifest_path", ""),
        observed_status=item.get("observed_status"),
    )
