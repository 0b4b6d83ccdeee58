"""Field views and diffs: what changed between a stored run and a desired one, field by field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from himl_manifest.model import (
    RunRecord,
)
from himl_manifest.plan.model import FieldChange
from himl_manifest.spec import (
    RunSpec,
    canonical_json,
    identity_view,
)

#: ``retry.max_attempts`` when a spec does not say (the schema's default).
DEFAULT_MAX_ATTEMPTS = 3


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted paths; lists and empty mappings are leaves."""
    out: dict[str, Any] = {}
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, f"{path}."))
        else:
            out[path] = item
    return out


def same_json(a: Any, b: Any) -> bool:
    """Equal as canonical JSON, as the spec hash sees them (``1``, ``1.0`` and ``True`` differ)."""
    if type(a) is type(b) and not isinstance(a, (list, dict)):
        return bool(a == b)
    return canonical_json(a) == canonical_json(b)


def diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[FieldChange, ...]:
    """Every dotted path whose value differs (as canonical JSON: what the spec hash sees)."""
    before, after = flatten(old), flatten(new)
    changes = []
    for path in sorted(before.keys() | after.keys()):
        old_value, new_value = before.get(path), after.get(path)
        if not same_json(old_value, new_value):
            changes.append(FieldChange(path, old_value, new_value))
    return tuple(changes)


def record_identity(record: RunRecord, conda_hint: str | None = None) -> dict[str, Any]:
    """The identity view of an observed run, rebuilt from the spec it was submitted with.

    A record that does not say which conda file digest it ran with is taken to have run with
    ``conda_hint`` (the desired run's): then a conda change cannot be told apart, and the
    planner falls back to reporting the spec hash itself as the change.
    """
    spec = {key: value for key, value in record.spec.items() if key != "seed"}
    conda = record.conda_sha256
    if conda is None and "conda_sha256" not in record.provenance:
        conda = conda_hint
    return identity_view(spec, record.seed, conda)


def retry_policy(run: RunSpec) -> tuple[bool, int]:
    """``(on_failure, max_attempts)`` of a run's retry policy, schema defaults filled in."""
    policy = run.spec.get("retry") or {}
    return bool(policy.get("on_failure", False)), int(
        policy.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
    )
