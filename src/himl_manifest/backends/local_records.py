"""A managed run in MLflow's terms: the tags a new run gets, the cosmetic ones an update
changes, and an MLflow run read back as a :class:`~himl_manifest.model.RunRecord`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from himl_manifest.model import Lifecycle, RunRecord
from himl_manifest.records import (
    TAG_APPLY_ID,
    TAG_ATTEMPT,
    TAG_DISPLAY_NAME,
    TAG_ERROR,
    TAG_EXPERIMENT,
    TAG_HOST,
    TAG_MANIFEST,
    TAG_NOTE,
    TAG_OUTPUT_DIR,
    TAG_PID,
    TAG_RESUME_FROM,
    TAG_RUN_NAME,
    TAG_SEED,
    TAG_SPEC_HASH,
    TAG_STARTED_AT,
    TAG_STATE,
    TAG_USER_PREFIX,
    cap,
    display_name,
    has_default_checkpoint,
    identity_facts,
    plain_tags,
    run_source_tags,
    seconds,
    spec_tags,
    spec_text,
    status_from_mlflow,
    stored_fold,
    stored_provenance,
    stored_state,
)
from himl_manifest.spec import RunSpec


def cosmetic_tags(run: RunSpec) -> dict[str, str]:
    """Display name, note and user tags: the fields `update` changes in place."""
    shown = run.spec.get("tracking", {}).get("display_name")
    tags = {
        TAG_DISPLAY_NAME: display_name(run.run_name, shown),
        TAG_NOTE: cap(run.spec.get("description", "")),
    }
    for key, value in (run.spec.get("tags") or {}).items():
        tags[f"{TAG_USER_PREFIX}{key}"] = cap(value)
    return tags


def manifest_tags(run: RunSpec) -> dict[str, str]:
    """Every tag a run's cosmetic fields make on an MLflow run: :func:`cosmetic_tags`, and the
    manifest's ``tags`` as plain tags too (``team`` beside ``himl.tag.team``), on a new run
    and after an in-place update alike."""
    return {**plain_tags(run.spec.get("tags")), **cosmetic_tags(run)}


def run_tags(
    run: RunSpec, attempt: int, output_dir: Path, host: str, apply_id: str
) -> dict[str, str]:
    """Every tag a new managed run is created with."""
    tags = {
        **identity_facts(run, attempt),
        TAG_STATE: Lifecycle.ACTIVE.value,
        TAG_OUTPUT_DIR: str(output_dir),
        TAG_HOST: host,
        TAG_APPLY_ID: apply_id,
        **run_source_tags(run),
        **spec_tags(run),
        **manifest_tags(run),
    }
    if run.resume_from:
        tags[TAG_RESUME_FROM] = run.resume_from
    return tags


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def to_record(mlflow_run: Any) -> RunRecord | None:
    """An MLflow run -> a RunRecord (None for a run whose tags are not ours or are damaged).

    Only the tags are read: the stored spec is decoded when something reads ``record.spec``
    (records written before the conda digest was a tag decode it here, once).

    ``has_checkpoint`` is what the store records (``himl.checkpoints``, written by the runner
    each time it saves a checkpoint: :func:`~.records.has_default_checkpoint`), never a look
    at a disk, so every machine planning against the store sees the same.

    A light history run of :func:`.local_sql.read_managed_runs` (``full=False``) gives a light
    record: identity, attempt, state, status, times and ``has_checkpoint`` as usual; an empty
    spec, no metrics, no provenance, no error tail."""
    tags: dict[str, str] = dict(mlflow_run.data.tags)
    info = mlflow_run.info
    name = tags.get(TAG_RUN_NAME)
    light = getattr(mlflow_run, "light", False)
    text = spec_text(tags)
    seed = _int(tags.get(TAG_SEED))
    if not name or not (text or light) or seed is None or TAG_SPEC_HASH not in tags:
        return None
    deleted = getattr(info, "lifecycle_stage", "active") == "deleted"
    status = status_from_mlflow(info.status)
    common: dict[str, Any] = {
        "run_name": name,
        "run_id": info.run_id,
        "experiment": tags.get(TAG_EXPERIMENT, ""),
        "seed": seed,
        "fold": stored_fold(tags),
        "spec_hash": tags[TAG_SPEC_HASH],
        "status": status,
        "has_checkpoint": has_default_checkpoint(tags, status),
        "attempt": _int(tags.get(TAG_ATTEMPT)) or 1,
        "state": stored_state(tags, deleted),
        "manifest_path": tags.get(TAG_MANIFEST, ""),
        "output_dir": tags.get(TAG_OUTPUT_DIR),
        "pid": _int(tags.get(TAG_PID)),
        "host": tags.get(TAG_HOST),
        "start_time": info.start_time / 1000.0 if info.start_time else None,
        "end_time": info.end_time / 1000.0 if info.end_time else None,
        "run_start_time": seconds(tags.get(TAG_STARTED_AT)),
    }
    if light:
        return RunRecord(**common, spec_source={})
    provenance = stored_provenance(tags, text)
    if provenance is None:
        return None
    return RunRecord(
        **common,
        spec_source=text,
        resume_from=tags.get(TAG_RESUME_FROM) or None,
        metrics={k: float(v) for k, v in mlflow_run.data.metrics.items()},
        provenance=provenance,
        error_tail=tags.get(TAG_ERROR, ""),
    )


def apply_id_of(mlflow_run: Any) -> str | None:
    value = mlflow_run.data.tags.get(TAG_APPLY_ID)
    return str(value) if value else None
