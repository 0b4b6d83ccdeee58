"""The Azure ML backend: the workspace's jobs are the run store, Azure ML runs them.

One attempt of one run is one command job (:mod:`.jobs`): attempt 1 is named after the run
(the idempotency key), attempt N ``<run>-a<N>``. How a job reads as a run (its properties,
its definition, its tags, its status) is :mod:`.records`'s; submitting a batch is
:mod:`.submit`'s (the code upload: :mod:`.upload`); pre-flight :mod:`.preflight`'s and
:mod:`.checks`'s.

Reads are bulk: :meth:`AzureMLBackend.list_runs` is one paged listing of every managed job
(``properties=himl.managed``, all view types), read as JSON (:class:`.records.JobFacts`, which
also says whether a job is archived); the number of requests depends on the number of jobs
(pages), never on the number of manifests. Every Azure error becomes a
:class:`~himl_manifest.errors.StoreError` saying what failed and what to do (:mod:`.workspace`).
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from himl_manifest.backends.azureml.paging import json_pages
from himl_manifest.backends.azureml.records import (
    JobFacts,
    checkpoint_files,
    cosmetic_marker,
    damage,
    job_uri,
    to_record,
)
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
from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import CheckpointError, StoreError
from himl_manifest.model import (
    Lifecycle,
    RunRecord,
    parse_enum,
)
from himl_manifest.records import (
    AZUREML_TERMINAL,
    TAG_COSMETIC,
    TAG_MANAGED,
    TAG_RUN_NAME,
    TAG_STATE,
    TAG_USER_PREFIX,
    listed,
    parse_run_reference,
    path_in_run,
    spec_text,
    status_from_azureml,
)
from himl_manifest.records.select import chosen_attempt, latest_attempts
from himl_manifest.spec import RunSpec

if TYPE_CHECKING:
    from himl_manifest.backends.azureml.submit import Prepared


class AzureMLBackend(BackendBase):
    """The run store and executor over one Azure ML workspace.

    ``client``: an ``MLClient`` (:func:`.workspace.ml_client`); ``root``: the project root (the
    conda file is found from it); ``code``: code root -> the ARM id of its code asset (default:
    :class:`.upload.CodeAssets`, which uploads each code root's snapshot once);
    ``default_compute``: the cluster for runs whose ``compute.target`` is ``local`` (None:
    such runs are refused); ``poll_s``: seconds between status polls in :meth:`wait` (default
    ``HIML_AZUREML_POLL_S``, else 30)."""

    name = "azureml"
    capabilities = Capabilities(waits_locally=False, multi_node=True, logs=True)

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
        pages = json_pages(self.client.jobs, kind, filters)
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
        """Through MLflow on the workspace's tracking URI (:func:`.follow.metric_histories`)."""
        from himl_manifest.backends.azureml.follow import metric_histories

        return metric_histories(self, run_ids)

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
        listing = self._records("listing the runs to wait for")
        latest = latest_attempts(r for r in listing if r.run_name in wanted)
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

    def job_log(self, record: RunRecord | str, *, follow: bool, out: TextIO) -> None:
        """Write the log of ``record``'s job (or the job named so) to ``out``
        (:func:`.follow.job_log`)."""
        job_name = record if isinstance(record, str) else record.run_id
        from himl_manifest.backends.azureml.follow import job_log

        job_log(self, job_name, follow=follow, out=out)

    def cancel(self, run_names: Iterable[str]) -> None:
        """Ask Azure ML to cancel the unfinished attempts of ``run_names`` (returns at once)."""
        for run_name in run_names:
            for record in self._attempts(run_name, f"cancelling {run_name}"):
                if record.in_progress:
                    with azure_errors(f"cancelling {record.run_id}", self.workspace):
                        self.client.jobs.begin_cancel(record.run_id)


def _preferred(records: Iterable[RunRecord]) -> RunRecord | None:
    """The newest completed attempt, else the newest."""
    return chosen_attempt(list(records))


__all__ = [
    "AzureMLBackend",
    "checkpoint_files",
    "job_uri",
    "status_of",
    "to_record",
    "translate",
]
