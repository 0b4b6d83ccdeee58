"""How an Azure ML job is read as a run: the record format over the workspace's jobs.

- **properties** (add-only): identity and provenance (``himl.managed``, run name, seed, fold,
  spec hash, attempt, manifest, ``himl.provenance.*``); jobs of earlier versions also carry
  the run spec here (``himl.spec[.N]``);
- the **job definition**: the run spec (its environment variable ``HIML_RUN_SPEC``);
- **tags** (changeable): ``himl.state``, the manifest's tags (``himl.tag.*``), ``himl.cosmetic``
  (which cosmetic fields to read from the job itself after an in-place update; a JSON overlay on
  jobs of earlier versions), and what the runner writes in the job (``himl.checkpoints``,
  ``himl.error_tail``);
- the job's status (mapped by :func:`himl_manifest.records.status_from_azureml`) and whether it is
  archived.

:class:`JobFacts` is what a record needs of one job, read from the listing's JSON or from an
SDK entity; :func:`to_record` makes the record (None for a job that is not ours or is damaged:
:func:`damage` says why).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from himl_manifest.backends.azureml.jobs import RUN_SPEC_ENV
from himl_manifest.model import RunRecord, RunStatus, cosmetic_view, with_cosmetic
from himl_manifest.records import (
    OUTPUTS_DIR,
    TAG_ATTEMPT,
    TAG_CHECKPOINTS,
    TAG_COSMETIC,
    TAG_COSMETIC_PARTS,
    TAG_ERROR,
    TAG_EXPERIMENT,
    TAG_MANAGED,
    TAG_MANIFEST,
    TAG_RESUME_FROM,
    TAG_RUN_NAME,
    TAG_SEED,
    TAG_SPEC_HASH,
    TAG_USER_PREFIX,
    path_in_run,
    spec_text,
    status_from_azureml,
    stored_fold,
    stored_provenance,
    stored_state,
)
from himl_manifest.spec import RunSpec, canonical_json


def job_uri(job_name: str, path: PurePosixPath | str = "") -> str:
    """``azureml://jobs/<job>/outputs/artifacts/paths/outputs[/<path>]``: a file of the job's
    run folder (``./outputs`` inside the job), as a job input takes it."""
    base = f"azureml://jobs/{job_name}/outputs/artifacts/paths/{OUTPUTS_DIR}"
    return f"{base}/{path}" if str(path) else base


#: The value of :data:`TAG_COSMETIC` on a job whose cosmetic fields were changed in place
#: (``job:`` and the fields the manifest sets, e.g. ``job:description,tags``): read them from
#: the job itself, its description, its ``himl.tag.*`` tags and its display name.
COSMETIC_FROM_JOB = "job:"


def cosmetic_marker(run: RunSpec) -> str:
    """What :meth:`AzureMLBackend.update_metadata` records in :data:`TAG_COSMETIC`."""
    return COSMETIC_FROM_JOB + ",".join(sorted(cosmetic_view(run.spec)))


def live_cosmetic(job: JobFacts) -> dict[str, Any]:
    """The cosmetic view of a job updated in place (see :data:`COSMETIC_FROM_JOB`). Jobs of
    earlier versions carry the view itself as JSON in ``himl.cosmetic`` (over ``.N`` parts
    when long)."""
    tags = job.tags
    marker = tags.get(TAG_COSMETIC, "")
    count = _int(tags.get(TAG_COSMETIC_PARTS)) or 0
    if count:
        marker = "".join(tags.get(f"{TAG_COSMETIC}.{i}", "") for i in range(count))
    if not marker.startswith(COSMETIC_FROM_JOB):
        view: dict[str, Any] = json.loads(marker)
        return view
    fields = set(marker[len(COSMETIC_FROM_JOB) :].split(","))
    view = {}
    if "description" in fields:
        view["description"] = job.description
    if "tags" in fields:
        view["tags"] = {
            key[len(TAG_USER_PREFIX) :]: value
            for key, value in tags.items()
            if key.startswith(TAG_USER_PREFIX)
        }
    if "tracking" in fields:
        view["tracking"] = {"display_name": job.display_name}
    return view


def _int(value: object) -> int | None:
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class JobFacts:
    """What a record needs from one job, read either from an SDK ``Job`` entity
    (:meth:`of_entity`) or from the job's REST JSON as a listing page holds it
    (:meth:`of_rest`): the bulk listing reads JSON, since building SDK entities costs about a
    millisecond a job (most of a plan against a big workspace)."""

    name: str
    properties: dict[str, str]
    tags: dict[str, str]
    status: str
    studio_url: str = ""
    created: float | None = None
    #: Whether the job is archived: the REST JSON says (``isArchived``), the SDK's entity
    #: does not (None).
    archived: bool | None = None
    #: The run spec the job was submitted with (its :data:`.jobs.RUN_SPEC_ENV` variable).
    spec: str = ""
    description: str = ""
    display_name: str = ""
    experiment: str = ""

    @classmethod
    def of_entity(cls, job: Any) -> JobFacts:
        created = getattr(getattr(job, "creation_context", None), "created_at", None)
        stamp = getattr(created, "timestamp", None)
        services = getattr(job, "services", None) or {}
        studio = services.get("Studio") if isinstance(services, Mapping) else None
        status = getattr(job, "status", None)
        variables = _strings(getattr(job, "environment_variables", None))
        return cls(
            name=str(job.name),
            properties=_strings(getattr(job, "properties", None)),
            tags=_strings(getattr(job, "tags", None)),
            status=str(getattr(status, "value", status) or ""),
            studio_url=str(getattr(studio, "endpoint", "") or ""),
            created=float(stamp()) if callable(stamp) else None,
            spec=variables.get(RUN_SPEC_ENV, ""),
            description=str(getattr(job, "description", None) or ""),
            display_name=str(getattr(job, "display_name", None) or ""),
            experiment=str(getattr(job, "experiment_name", None) or ""),
        )

    @classmethod
    def of_rest(cls, data: Mapping[str, Any]) -> JobFacts | None:
        """From a job's REST JSON (``{"name", "properties": {...}, "systemData"}``); None when
        it has no name or no properties object (a malformed entry of a listing)."""
        name = data.get("name")
        body = data.get("properties")
        if not name or not isinstance(body, Mapping):
            return None
        services = body.get("services")
        studio = services.get("Studio") if isinstance(services, Mapping) else None
        created = (data.get("systemData") or {}).get("createdAt")
        stamp: float | None = None
        if isinstance(created, str):
            with contextlib.suppress(ValueError):
                stamp = datetime.fromisoformat(created.replace("Z", "+00:00")).timestamp()
        return cls(
            name=str(name),
            properties=_strings(body.get("properties")),
            tags=_strings(body.get("tags")),
            status=str(body.get("status") or ""),
            studio_url=str(studio.get("endpoint") or "") if isinstance(studio, Mapping) else "",
            created=stamp,
            archived=bool(body.get("isArchived")),
            spec=_strings(body.get("environmentVariables")).get(RUN_SPEC_ENV, ""),
            description=str(body.get("description") or ""),
            display_name=str(body.get("displayName") or ""),
            experiment=str(body.get("experimentName") or ""),
        )

    @property
    def managed(self) -> bool:
        return self.properties.get(TAG_MANAGED) == "true"


#: The checkpoint a run resumes from, as the runner lists it in ``himl.checkpoints``.
_DEFAULT_CHECKPOINT = str(path_in_run(""))


def _facts(job: Any) -> JobFacts:
    return job if isinstance(job, JobFacts) else JobFacts.of_entity(job)


def to_record(job: Any, *, archived: bool = False) -> RunRecord | None:
    """An Azure ML job (SDK entity or :class:`JobFacts`) -> a RunRecord (None for a job that
    is not ours or is damaged).

    The spec is decoded only when something reads ``record.spec``, except after an in-place
    metadata update, whose cosmetic fields are laid over the submitted spec here."""
    if job is None:
        return None
    facts_of = _facts(job)
    properties, tags = facts_of.properties, facts_of.tags
    facts = {**tags, **properties}  # identity from the (add-only) properties first
    name = facts.get(TAG_RUN_NAME)
    seed = _int(facts.get(TAG_SEED))
    # the spec is in the job definition; jobs of earlier versions kept it in properties
    text = facts_of.spec or spec_text(properties) or spec_text(tags)
    if not name or seed is None or not text or TAG_SPEC_HASH not in facts:
        return None
    if TAG_COSMETIC in tags or TAG_COSMETIC_PARTS in tags:  # updated in place since
        try:
            payload = json.loads(text)
            payload["spec"] = with_cosmetic(payload["spec"], live_cosmetic(facts_of))
            text = canonical_json(payload)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None
    state = stored_state(tags, archived)
    job_name = facts_of.name
    status = status_from_azureml(facts_of.status or None)
    listing = tags.get(TAG_CHECKPOINTS)
    files = {f for f in (listing or "").split(",") if f}
    has_checkpoint = (
        _DEFAULT_CHECKPOINT in files if listing is not None else status == RunStatus.COMPLETED
    )
    provenance = stored_provenance(facts, text)
    if provenance is None:
        return None
    error_tail = tags.get(TAG_ERROR, "")
    where = facts_of.studio_url
    if not error_tail and status in (RunStatus.FAILED, RunStatus.CANCELLED):
        error_tail = f"Azure ML job {job_name} ended {facts_of.status}" + (
            f"; its logs: {where}" if where else ""
        )
    return RunRecord(
        run_name=name,
        run_id=job_name,
        experiment=facts.get(TAG_EXPERIMENT, ""),
        seed=seed,
        fold=stored_fold(facts),
        spec_hash=facts[TAG_SPEC_HASH],
        status=status,
        spec_source=text,
        attempt=_int(facts.get(TAG_ATTEMPT)) or 1,
        state=state,
        manifest_path=facts.get(TAG_MANIFEST, ""),
        resume_from=facts.get(TAG_RESUME_FROM) or None,
        has_checkpoint=has_checkpoint,
        output_dir=job_uri(job_name),
        host="azureml",
        start_time=facts_of.created,
        provenance=provenance,
        error_tail=error_tail,
        url=where or None,
    )


def damage(job: JobFacts) -> str:
    """Why a managed job gives no record (for the warning that names it)."""
    facts = {**job.tags, **job.properties}
    if not facts.get(TAG_RUN_NAME):
        return f"no {TAG_RUN_NAME}"
    if _int(facts.get(TAG_SEED)) is None:
        return f"no valid {TAG_SEED}"
    if TAG_SPEC_HASH not in facts:
        return f"no {TAG_SPEC_HASH}"
    if not (job.spec or spec_text(job.properties) or spec_text(job.tags)):
        return "no run spec in its definition"
    return "its run spec or cosmetic fields are not valid JSON"


def checkpoint_files(job: Any) -> set[str] | None:
    """The checkpoint files the runner recorded on ``job`` (None: it recorded none)."""
    listing = (getattr(job, "tags", None) or {}).get(TAG_CHECKPOINTS)
    return None if listing is None else {f for f in str(listing).split(",") if f}
