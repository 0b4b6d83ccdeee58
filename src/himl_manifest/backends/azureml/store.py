"""The Azure ML backend: the workspace's jobs are the run store, Azure ML runs them.

One attempt of one run is one command job (:mod:`.jobs`): attempt 1 is named after the run
(the idempotency key), attempt N ``<run>-a<N>``. What a job records:

- **properties** (add-only): identity and provenance (``himl.managed``, run name, seed, spec
  hash, attempt, manifest, the run spec JSON over ``himl.spec[.N]``, ``himl.provenance.*``);
- **tags** (changeable): ``himl.state`` (active / superseded / archived), the manifest's tags
  (``himl.tag.*``), and, once ``update_metadata`` changed them, ``himl.cosmetic`` (the cosmetic
  view of the spec as JSON, over ``himl.cosmetic.N`` parts when long): read back over the spec
  stored at submission, since properties can't change;
- tags the runner writes inside the job through MLflow: ``himl.error_tail`` and
  ``himl.checkpoints`` (the checkpoint files of the run folder, comma-separated);
- the job's status (mapped by :func:`..protocol.status_from_azureml`) and whether it is archived.

Reads are bulk: :meth:`AzureMLBackend.list_runs` is one paged listing of every managed job
(``properties=himl.managed``, all view types), read as JSON (:class:`JobFacts`, which also
says whether a job is archived); the number of requests depends on the number of jobs (pages),
never on the number of manifests. Every Azure error becomes a
:class:`~himl_manifest.errors.StoreError` saying what failed and what to do (:mod:`.workspace`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TextIO

from himl_manifest.backends.azureml.jobs import RUN_SPEC_ENV
from himl_manifest.backends.azureml.workspace import (
    Timeouts,
    Workspace,
    azure_errors,
    find_workspace,
    is_already_exists,
    ml_client,
    poll_interval,
    status_of,
    translate,
)
from himl_manifest.backends.base import (
    BackendBase,
    Capabilities,
    MetricHistories,
    Progress,
    ProgressCallback,
    SubmitOutcome,
    Submitted,
)
from himl_manifest.backends.local_store import spec_text
from himl_manifest.backends.protocol import (
    AZUREML_TERMINAL,
    LOG_FILE,
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
    TAG_STATE,
    TAG_USER_PREFIX,
    listed,
    parse_run_reference,
    path_in_run,
    status_from_azureml,
    stored_fold,
    stored_provenance,
    stored_state,
)
from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import BackendUnavailable, CheckpointError, StoreError
from himl_manifest.model import (
    Lifecycle,
    RunRecord,
    RunStatus,
    cosmetic_view,
    parse_enum,
    with_cosmetic,
)
from himl_manifest.spec import RunSpec, canonical_json

if TYPE_CHECKING:
    from himl_manifest.backends.azureml.submit import Prepared


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


def _json_pages(operations: Any, kind: Any, filters: Mapping[str, str]) -> Iterable[Any] | None:
    """Every job of a ``jobs.list`` REST call, as the JSON the service sent, following its
    ``nextLink`` pages through the SDK client's own pipeline; None when this azure-ai-ml has
    not the internals this reads (the caller then uses the public listing)."""
    try:
        from azure.ai.ml._restclient.arm_ml_service.operations._operations import (
            build_jobs_list_request,
        )
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceExistsError,
            ResourceNotFoundError,
            map_error,
        )
        from azure.core.rest import HttpRequest

        rest = operations.service_client_01_2024_preview_arm.jobs
        client, config, scope = rest._client, rest._config, operations._operation_scope
        endpoint = rest._serialize.url("base_url", config.base_url, "str", skip_quote=True)
        first = build_jobs_list_request(
            resource_group_name=scope.resource_group_name,
            workspace_name=operations._workspace_name,
            subscription_id=config.subscription_id,
            list_view_type=kind,
            api_version=config.api_version,
            **filters,
        )
    except (ImportError, AttributeError, TypeError):
        return None
    errors = {401: ClientAuthenticationError, 404: ResourceNotFoundError, 409: ResourceExistsError}
    extra = dict(getattr(operations, "_kwargs", None) or {})

    def pages() -> Iterable[Any]:
        request: Any = first
        while request is not None:
            request.url = client.format_url(request.url, endpoint=endpoint)
            answer = client._pipeline.run(request, stream=False, **extra)
            response = answer.http_response
            if response.status_code != 200:
                map_error(status_code=response.status_code, response=response, error_map=errors)
                raise HttpResponseError(response=response)
            # the pipeline's ContentDecodePolicy has decoded the body already
            body = answer.context.get("deserialized_data")
            if not isinstance(body, Mapping):
                body = response.json()
            yield from body.get("value") or []
            request = None
            link = body.get("nextLink")
            if link:
                parsed = urllib.parse.urlparse(link)
                query = urllib.parse.parse_qs(parsed.query)
                query["api-version"] = [config.api_version]
                request = HttpRequest("GET", urllib.parse.urljoin(link, parsed.path), params=query)

    return pages()


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


class AzureMLBackend(BackendBase):
    """The run store and executor over one Azure ML workspace.

    ``client``: an ``MLClient`` (:func:`.workspace.ml_client`); ``root``: the project root (the
    conda file is found from it); ``code``: code root -> the ARM id of its code asset (default:
    :class:`.upload.CodeAssets`, which uploads each code root's snapshot once);
    ``default_compute``: the cluster for runs whose ``compute.target`` is ``local`` (None:
    such runs are refused); ``poll_s``: seconds between status polls in :meth:`wait` (default
    ``HIML_AZUREML_POLL_S``, else 30)."""

    name = "azureml"
    capabilities = Capabilities(waits_locally=False, multi_node=True)

    def __init__(
        self,
        client: Any,
        *,
        root: Path,
        code: Callable[[str], str] | None = None,
        workspace: Workspace | None = None,
        default_compute: str | None = None,
        poll_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        timeouts: Timeouts | None = None,
    ) -> None:
        from himl_manifest.backends.azureml.submit import Submission
        from himl_manifest.backends.azureml.upload import CodeAssets

        self.client = client
        self.root = root
        self.workspace = workspace
        self.default_compute = default_compute
        self.poll_s = poll_interval() if poll_s is None else poll_s
        self.sleep = sleep
        self.timeouts = timeouts or Timeouts.from_environment()
        if code is None:
            code = CodeAssets(client, root, workspace=workspace, timeouts=self.timeouts).code_id
        self.submission = Submission(self, code)
        #: More environment variables for every job (``himl-runner --debug_ddp``).
        self.environment_variables: dict[str, str] = {}
        #: Requests made, by kind (``list``, ``get``, ``create``, ``update``, ``archive``).
        self.calls: dict[str, int] = {}
        #: Managed jobs a read could not make sense of (named once each).
        self._damaged: dict[str, str] = {}

    @classmethod
    def open(
        cls,
        root: Path,
        *,
        config: str | Path | None = None,
        credential: Any = None,
        timeouts: Timeouts | None = None,
        **kwargs: Any,
    ) -> AzureMLBackend:
        """The backend of the workspace the project at ``root`` names (see :mod:`.workspace`)."""
        workspace = find_workspace(root, config)
        client = ml_client(workspace, credential=credential, timeouts=timeouts)
        return cls(client, root=root, workspace=workspace, timeouts=timeouts, **kwargs)

    def preflight(
        self, runs: Sequence[RunSpec], *, expected: Collection[str] = ()
    ) -> list[Diagnostic]:
        """The offline checks of :mod:`.preflight` (snapshot, environment, run specs) and
        those against the workspace (:mod:`.checks`: computes, data, datastores, upstream
        checkpoints), for the runs as they would be placed."""
        from himl_manifest.backends.azureml.checks import workspace_problems
        from himl_manifest.backends.azureml.preflight import preflight

        placed = [self.placed(run) for run in runs]
        return preflight(
            placed,
            self.root,
            workspace_check=lambda batch: workspace_problems(self, batch, expected),
        )

    def read_warnings(self) -> list[str]:
        return [
            f"Azure ML job {name} looks like one of ours but cannot be read ({why}): "
            "skipped; it plays no part in plans"
            for name, why in sorted(self._damaged.items())
        ]

    # --- reads --------------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    def _list(self, doing: str, *, view: str = "All", **filters: str) -> list[JobFacts]:
        """One paged listing of the workspace's jobs, read as JSON (:class:`JobFacts`)."""
        self._count("list")
        with azure_errors(doing, self.workspace):
            return [facts for facts in self._pages(view, filters) if facts is not None]

    def _pages(self, view: str, filters: Mapping[str, str]) -> Iterable[JobFacts | None]:
        """The listing through the SDK's own REST client and pipeline (auth, retries,
        timeouts), paged here and read as JSON: both the SDK's entities and its REST models cost
        about half a millisecond a job to build. azure-ai-ml is pinned below 1.36: should its
        internals move, its public ``jobs.list`` is read instead (counted as ``list-sdk``)."""
        from azure.ai.ml.constants import ListViewType

        kind = {
            "All": ListViewType.ALL,
            "ArchivedOnly": ListViewType.ARCHIVED_ONLY,
            "ActiveOnly": ListViewType.ACTIVE_ONLY,
        }[view]
        pages = _json_pages(self.client.jobs, kind, filters)
        if pages is not None:
            return (JobFacts.of_rest(job) for job in pages if isinstance(job, Mapping))
        self._count("list-sdk")
        return (
            JobFacts.of_entity(job)
            for job in self.client.jobs.list(list_view_type=kind, **filters)
            if job is not None
        )

    def _records(self, doing: str, **filters: str) -> list[RunRecord]:
        """Every managed job (matching ``filters``, ``properties=...``), as records: one paged
        listing, plus one of the archived jobs when the listing does not say which they are.
        A managed job that cannot be read is skipped and named (:meth:`read_warnings`)."""
        wanted = filters.pop("properties", "")
        properties = ",".join(p for p in (TAG_MANAGED, wanted) if p)
        jobs = [self._complete(job, doing) for job in self._list(doing, properties=properties)]
        archived = {job.name for job in jobs if job.archived}
        if any(job.archived is None for job in jobs):
            listing = self._list(doing, view="ArchivedOnly", properties=properties)
            archived = {job.name for job in listing}
        records = []
        for job in jobs:
            record = to_record(job, archived=job.name in archived)
            if record is not None:
                records.append(record)
            elif job.managed:
                self._damaged.setdefault(job.name, damage(job))
        return records

    def _complete(self, job: JobFacts, doing: str) -> JobFacts:
        """``job`` with its run spec: a listing that leaves out a job's definition (its
        environment variables) is completed by reading that job."""
        if job.spec or spec_text(job.properties) or not job.managed:
            return job
        full = self._get(job.name, doing)
        if full is None:
            return job
        return replace(job, spec=JobFacts.of_entity(full).spec)

    def list_runs(
        self, *, full: bool = True, history_of: Collection[str] | None = None
    ) -> list[RunRecord]:
        records = self._records("listing the runs")
        return [record for record in records if listed(record, history_of)]

    def _attempts(self, run_name: str, doing: str) -> list[RunRecord]:
        return self._records(doing, properties=f"{TAG_RUN_NAME}={run_name}")

    def _get(self, job_name: str, doing: str) -> Any | None:
        """The job called ``job_name``; None when there is none."""
        from azure.core.exceptions import ResourceNotFoundError

        self._count("get")
        with azure_errors(doing, self.workspace):
            try:
                return self.client.jobs.get(job_name)
            except ResourceNotFoundError:
                return None

    # --- metadata and lifecycle ----------------------------------------------------------------

    def _require(self, run_name: str, doing: str) -> list[RunRecord]:
        records = self._attempts(run_name, doing)
        if not records:
            raise StoreError(f"{doing}: no run named {run_name!r} in {self._where()}")
        return records

    def _where(self) -> str:
        return (
            f"Azure ML workspace {self.workspace}" if self.workspace else "the Azure ML workspace"
        )

    def update_metadata(self, run_name: str, run: RunSpec) -> None:
        """The cosmetic fields of ``run`` onto every attempt: description, display name and
        the manifest's tags (``himl.tag.*``: new values set, removed ones deleted), merged in
        place through the run history (``jobs.update``)."""
        from himl_manifest.backends.azureml.jobs import (
            job_description,
            job_display_name,
            user_tags,
        )

        doing = f"updating the metadata of {run_name}"
        tags = {**user_tags(run.spec), TAG_COSMETIC: cosmetic_marker(run)}
        description = job_description(run) or ""
        for job in self._jobs_of(run_name, doing):
            stale = sorted(
                key
                for key in job.tags
                if (key.startswith(TAG_USER_PREFIX) and key not in tags)
                or key.startswith(f"{TAG_COSMETIC}.")
            )
            self._count("update")
            with azure_errors(doing, self.workspace):
                self.client.jobs.update(
                    job.name, tags=tags, display_name=job_display_name(run), description=description
                )
                if stale:
                    self._count("untag")
                    self._delete_tags(job, stale)

    def _jobs_of(self, run_name: str, doing: str) -> list[JobFacts]:
        """Every attempt of ``run_name``, as the workspace lists them."""
        jobs = self._list(doing, properties=f"{TAG_MANAGED},{TAG_RUN_NAME}={run_name}")
        if not jobs:
            raise StoreError(f"{doing}: no run named {run_name!r} in {self._where()}")
        return jobs

    def _delete_tags(self, job: JobFacts, keys: Sequence[str]) -> None:
        """Remove tags from a job: the run history's ``DELETE .../runs/<job>/tags`` with the
        keys as its body (``jobs.update`` only merges; azure-ai-ml 1.35's generated call for it
        sends no body), through the SDK's run-history client (its auth, retries, timeouts)."""
        from azure.core.rest import HttpRequest

        operations = self.client.jobs
        scope = operations._operation_scope
        runs = operations._runs_operations._operation
        path = (
            f"/history/v1.0/subscriptions/{scope.subscription_id}/resourceGroups/"
            f"{scope.resource_group_name}/providers/Microsoft.MachineLearningServices/"
            f"workspaces/{operations._workspace_name}/experiments/"
            f"{urllib.parse.quote(job.experiment or 'Default', safe='')}/runs/"
            f"{urllib.parse.quote(job.name, safe='')}/tags"
        )
        url = runs._client.format_url(path, endpoint=runs._config.endpoint)
        request = HttpRequest("DELETE", url, json=list(keys), params={"api-version": "v1.0"})
        response = runs._client.send_request(request)
        response.raise_for_status()

    def set_state(self, run_name: str, state: Lifecycle | str) -> None:
        lifecycle: Lifecycle = parse_enum(Lifecycle, state, "state")
        doing = f"marking {run_name} {lifecycle.value}"
        for record in self._require(run_name, doing):
            self._count("update")
            with azure_errors(doing, self.workspace):
                self.client.jobs.update(record.run_id, tags={TAG_STATE: lifecycle.value})
                if lifecycle == Lifecycle.ARCHIVED and record.state != Lifecycle.ARCHIVED:
                    self._count("archive")
                    self.client.jobs.archive(record.run_id)
                elif record.state == Lifecycle.ARCHIVED and lifecycle != Lifecycle.ARCHIVED:
                    self._count("archive")
                    self.client.jobs.restore(record.run_id)

    def check_continuity(self, *, confirmed: bool) -> list[str]:
        """A workspace is not a file that can be lost or swapped under the project."""
        return []

    # --- run references ----------------------------------------------------------------------

    def _attempts_of_reference(self, reference: str) -> list[RunRecord]:
        doing = f"looking up run {reference!r}"
        records = self._attempts(reference, doing)
        if records:
            return records
        job = self._get(reference, doing)  # a job name (an attempt's id)
        record = to_record(job)
        return self._attempts(record.run_name, doing) if record is not None else []

    def find_run(self, reference: str) -> RunRecord | None:
        return _preferred(self._attempts_of_reference(reference))

    def resolve_checkpoint(self, reference: str) -> str:
        """``azureml://jobs/<job>/outputs/artifacts/paths/outputs/<path>`` of the newest attempt
        (completed ones first) that has the file. Whether a job has a file is what the runner
        recorded on it (``himl.checkpoints``); a job without that record is taken to have
        ``checkpoints/last.ckpt`` when it completed, and any other file is taken on trust (the
        job that mounts it fails if it is not there)."""
        name, inside = parse_run_reference(reference)
        attempts = self._attempts_of_reference(name)
        found = _preferred(attempts)
        if found is None:
            raise CheckpointError(f"checkpoint {reference!r}: no run {name!r} in {self._where()}")
        ordered = [
            found,
            *sorted((r for r in attempts if r is not found), key=lambda r: -r.attempt),
        ]
        wanted = str(inside)
        for record in ordered:
            job = self._get(record.run_id, f"resolving checkpoint {reference!r}")
            files = checkpoint_files(job)
            if files is None:
                has = record.has_checkpoint if inside == path_in_run("") else True
            else:
                has = wanted in files
            if has:
                return job_uri(record.run_id, inside)
        raise CheckpointError(f"checkpoint {reference!r}: run {found.run_name} has no {inside}")

    # --- metrics ------------------------------------------------------------------------------

    def metric_histories(self, run_ids: Collection[str]) -> MetricHistories:
        """Through MLflow's client on the workspace's tracking URI (a job's name is its MLflow
        run id): one request per run and metric, MLflow's REST API having no bulk history read.
        Needs azureml-mlflow (MLflow's ``azureml://`` plugin; ``workspaces.get`` hands it the
        client's credential). MLflow's HTTP retries are bounded by our timeouts, and its errors
        become ours."""
        import importlib.util

        from himl_manifest.backends.local_metrics import client_histories, empty

        if not run_ids:
            return empty(run_ids)
        if importlib.util.find_spec("azureml.mlflow") is None:
            raise BackendUnavailable(
                "reading metric histories from Azure ML needs azureml-mlflow (MLflow's plugin "
                "for azureml:// tracking URIs): pip install 'himl-manifest[azure]'"
            )
        doing = "reading metric histories"
        name = self.workspace.workspace_name if self.workspace else self.client.workspace_name
        with azure_errors(doing, self.workspace):
            try:
                found = self.client.workspaces.get(name)
            except AttributeError as exc:  # the plugin, on a workspace without a tracking URI
                raise StoreError(f"{doing}: {self._where()} has no MLflow tracking URI") from exc
        uri = str(getattr(found, "mlflow_tracking_uri", "") or "")
        if not uri:
            raise StoreError(f"{doing}: {self._where()} has no MLflow tracking URI")
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._count("metrics")
        with azure_errors(doing, self.workspace), _mlflow_http(self.timeouts):
            try:
                return client_histories(MlflowClient(uri), run_ids)
            except MlflowException as exc:
                message = str(getattr(exc, "message", None) or exc).splitlines()[0]
                raise StoreError(
                    f"{doing}: the workspace's MLflow tracking server refused: {message}"
                ) from exc

    # --- the executor ------------------------------------------------------------------------

    def submit(
        self, runs: Sequence[RunSpec], *, attempts: Mapping[str, int] | None = None
    ) -> list[Submitted]:
        """Prepare every job of ``runs`` (code, environments, data versions, the SDK's checks),
        then send them (:mod:`.submit`)."""
        if not runs:
            return []
        prepared = self.submission.prepare(runs, attempts or {})
        return self.submission.send(prepared)

    def placed(self, run: RunSpec) -> RunSpec:
        from himl_manifest.backends.azureml.submit import placed_on

        return placed_on(run, self.default_compute)

    def _send(self, item: Prepared) -> Submitted:
        """Send one prepared job; a name that exists is read and compared."""
        doing = f"submitting {item.name}"
        self._count("create")
        with azure_errors(doing, self.workspace):
            try:
                created = self.client.jobs.create_or_update(item.node)
            except Exception as exc:
                if not is_already_exists(exc):
                    raise
                return self._existing(item.run, item.attempt, item.name)
        record = to_record(created)
        return Submitted(item.run.run_name, item.attempt, SubmitOutcome.CREATED, record)

    def _existing(self, run: RunSpec, attempt: int, name: str) -> Submitted:
        """The job ``name`` exists: ours with the same identity (another apply made it, or our
        own PUT whose reply was lost), or a conflict."""
        job = self._get(name, f"reading the existing job {name}")
        record = to_record(job)
        if record is None:
            what = "no job" if job is None else "a job himl-manifest did not make"
            return Submitted(
                run.run_name,
                attempt,
                SubmitOutcome.CONFLICT,
                None,
                f"the name {name} is taken by {what} in {self._where()}",
            )
        if record.spec_hash == run.spec_hash and record.attempt == attempt:
            return Submitted(run.run_name, attempt, SubmitOutcome.EXISTED, record)
        return Submitted(
            run.run_name,
            attempt,
            SubmitOutcome.CONFLICT,
            record,
            f"exists with spec hash {record.spec_hash}",
        )

    def wait(
        self, run_names: Collection[str], *, progress: ProgressCallback | None = None
    ) -> list[RunRecord]:
        """Poll the latest attempt of each run (``jobs.get``) until every one has ended."""
        wanted = set(run_names)
        latest: dict[str, RunRecord] = {}
        for record in self._records("listing the runs to wait for"):
            if record.run_name in wanted:
                best = latest.get(record.run_name)
                if best is None or record.attempt > best.attempt:
                    latest[record.run_name] = record
        pending = {name: record.run_id for name, record in latest.items()}
        seen: dict[str, str] = {}
        while pending:
            for run_name, job in sorted(pending.items()):
                found = self._get(job, f"waiting for {job}")
                if found is None:
                    raise StoreError(f"waiting for {job}: the job is gone from {self._where()}")
                word = str(getattr(found.status, "value", found.status))
                if progress is not None and seen.get(run_name) != word:
                    message = f"attempt {latest[run_name].attempt}: Azure ML job {job} {word}"
                    progress(Progress(run_name, status_from_azureml(word), message))
                seen[run_name] = word
                if word in AZUREML_TERMINAL:
                    del pending[run_name]
            if pending:
                self.sleep(self.poll_s)
        return [r for r in self._records("listing the finished runs") if r.run_name in wanted]

    # --- logs ----------------------------------------------------------------------------------

    def job_log(self, job_name: str, *, follow: bool, out: TextIO) -> None:
        """Write the log of job ``job_name`` to ``out``.

        ``follow``: stream it until the job ends (``jobs.stream``, which writes to stdout:
        redirected to ``out``); a job that ends failed is not an error here (its status says
        so). Otherwise, for a job that has ended, its default artifacts are downloaded
        (``jobs.download``, logs and ``outputs/``) and its runner's log (``outputs/runner.log``)
        written, else the job's standard output (``user_logs/std_log*.txt``); a job still
        running has no downloadable logs yet (StoreError: follow it instead)."""
        doing = f"{'streaming' if follow else 'fetching'} the log of Azure ML job {job_name}"
        if follow:
            self._count("stream")
            with azure_errors(doing, self.workspace), contextlib.redirect_stdout(out):
                try:
                    self.client.jobs.stream(job_name)
                except Exception as exc:
                    if type(exc).__name__ != "JobException" or not self._ended(job_name, doing):
                        raise
            return
        job = self._get(job_name, doing)
        if job is None:
            raise StoreError(f"{doing}: no such job in {self._where()}")
        facts = JobFacts.of_entity(job)
        word = facts.status
        if word not in AZUREML_TERMINAL:
            where = facts.studio_url
            raise StoreError(
                f"{doing}: the job is {word}; Azure ML hands out its logs once it has ended: "
                "follow it with `himl logs RUN --follow`" + (f", or see {where}" if where else "")
            )
        with tempfile.TemporaryDirectory(prefix="himl-logs-") as folder:
            self._count("download")
            with azure_errors(doing, self.workspace):
                self.client.jobs.download(job_name, download_path=folder, output_name=None)
            files = log_files(Path(folder))
            if not files:
                raise StoreError(f"{doing}: the job's artifacts hold no log file")
            for path in files:
                if len(files) > 1:
                    out.write(f"===== {path.relative_to(folder).as_posix()} =====\n")
                out.write(path.read_text(encoding="utf-8", errors="replace"))
            out.flush()

    def _ended(self, job_name: str, doing: str) -> bool:
        job = self._get(job_name, doing)
        word = str(getattr(getattr(job, "status", None), "value", getattr(job, "status", "")))
        return word in AZUREML_TERMINAL

    def cancel(self, run_names: Iterable[str]) -> None:
        """Ask Azure ML to cancel the unfinished attempts of ``run_names`` (returns at once)."""
        for run_name in run_names:
            for record in self._attempts(run_name, f"cancelling {run_name}"):
                if record.in_progress:
                    with azure_errors(f"cancelling {record.run_id}", self.workspace):
                        self.client.jobs.begin_cancel(record.run_id)


@contextlib.contextmanager
def _mlflow_http(timeouts: Timeouts) -> Iterator[None]:
    """MLflow's HTTP client with our bounds for the time of a read (its own defaults: 7
    retries with a backoff factor of 2, 120 s a request)."""
    import os

    wanted = {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(timeouts.retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(timeouts.deadline_s)),
    }
    saved = {key: os.environ.get(key) for key in wanted}
    os.environ.update({k: v for k, v in wanted.items() if saved[k] is None})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)


def log_files(folder: Path) -> list[Path]:
    """The logs among a job's downloaded artifacts: the runner's (``outputs/runner.log``),
    else the job's standard output and error (``user_logs/std_log*.txt``)."""
    runner = sorted(folder.rglob(f"{OUTPUTS_DIR}/{LOG_FILE}"))
    return runner or sorted(p for p in folder.rglob("std_log*.txt") if p.is_file())


def _preferred(records: Iterable[RunRecord]) -> RunRecord | None:
    """The newest completed attempt, else the newest."""
    found = list(records)
    completed = [r for r in found if r.status == RunStatus.COMPLETED]
    return max(completed or found, key=lambda r: r.attempt, default=None)


__all__ = [
    "AzureMLBackend",
    "checkpoint_files",
    "job_uri",
    "log_files",
    "status_of",
    "to_record",
    "translate",
]
