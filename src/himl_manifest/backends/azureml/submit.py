"""Submitting a batch of runs to Azure ML: prepared completely, then sent.

:class:`Submission` turns the runs of one ``submit`` into jobs in two phases:

1. **prepare**, where nothing is sent as a job: each code root's code asset (uploaded once,
   :mod:`.upload`), each distinct environment registered once (an anonymous environment whose
   version is its content hash), each ``azure: <name>`` data asset's latest version resolved
   once, each job built (:func:`.jobs.build_command_node`) and put through the SDK's own
   client-side checks (:func:`.jobs.check_job`). Any problem here stops the batch before its
   first job exists.
2. **send**: one ``jobs.create_or_update`` per job, in order. A name that exists already is
   read and compared (the same identity: success; another: a conflict). When a job is refused
   half way anyway, or Ctrl-C arrives, :class:`~..base.SubmissionStopped` says which runs were
   accepted and which were never sent.

The assets are resolved once per :class:`Submission`; the backend keeps one for its life
(one apply), so a second batch of the same apply (a dependent run submitted once its
upstream completed) uploads and registers nothing again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from himl_manifest.backends.azureml.jobs import (
    RUN_SPEC_ENV,
    build_command_node,
    check_job,
    data_asset,
    environment_image,
    job_environment,
    job_name,
    run_spec_env,
)
from himl_manifest.backends.azureml.workspace import Workspace, azure_errors
from himl_manifest.backends.base import SubmissionStopped, Submitted
from himl_manifest.spec import RunSpec, find_conda_file


class WorkspaceBackend(Protocol):
    """What a submission and the workspace checks use of the Azure ML backend."""

    client: Any
    root: Path
    workspace: Workspace | None
    environment_variables: dict[str, str]
    submission: Submission

    def _count(self, kind: str) -> None: ...

    def _where(self) -> str: ...

    def _send(self, item: Prepared) -> Submitted: ...

    def placed(self, run: RunSpec) -> RunSpec: ...

    def resolve_checkpoint(self, reference: str) -> str: ...


#: The compute target meaning "this machine" (the schema's default).
LOCAL_TARGET = "local"


@dataclass
class Prepared:
    """One job, built and checked, not sent yet."""

    run: RunSpec
    attempt: int
    name: str
    node: Any


class Submission:
    """The assets and jobs of the runs one backend submits (see the module doc).

    ``code``: code root (relative to the project root) -> the code asset's ARM id."""

    def __init__(self, backend: WorkspaceBackend, code: Callable[[str], str]) -> None:
        self.backend = backend
        self.code = code
        self._environments: dict[tuple[str, str], str] = {}  # (conda file, image) -> id
        self._latest: dict[str, str] = {}

    @property
    def client(self) -> Any:
        return self.backend.client

    @property
    def workspace(self) -> Workspace | None:
        return self.backend.workspace

    # --- assets -------------------------------------------------------------------------------

    def environment_id(self, run: RunSpec) -> str:
        """The ARM id of the run's environment (its conda file and image), built and
        registered the first time a run needs it."""
        key = (str(find_conda_file(self.backend.root, run.spec)), environment_image(run.spec))
        if key not in self._environments:
            environment = job_environment(run, self.backend.root)
            self.backend._count("environment")
            with azure_errors(f"registering the environment of {run.run_name}", self.workspace):
                registered = self.client.environments.create_or_update(environment)
            self._environments[key] = str(registered.id)
        return self._environments[key]

    def latest_version(self, name: str, doing: str) -> str:
        """The version ``name``'s latest resolves to in the workspace, asked once."""
        if name not in self._latest:
            self.backend._count("data")
            with azure_errors(doing, self.workspace):
                found = self.client.data.get(name, label="latest")
            self._latest[name] = str(found.version)
        return self._latest[name]

    def remember_latest(self, name: str, version: str) -> None:
        """What pre-flight resolved ``name``'s latest to: the submission uses the same."""
        self._latest.setdefault(name, version)

    def latest_versions(self, run: RunSpec) -> dict[str, str]:
        """Data asset name -> resolved version, for the run's unversioned Azure datasets."""
        found = {}
        for dataset in run.spec.get("datasets") or []:
            if "azure" in dataset:
                name, version = data_asset(dataset)
                if version is None:
                    doing = f"{run.run_name}: resolving data asset {name}@latest"
                    found[name] = self.latest_version(name, doing)
        return found

    # --- the two phases -----------------------------------------------------------------------

    def prepare(self, runs: Sequence[RunSpec], attempts: Mapping[str, int]) -> list[Prepared]:
        """Every job of the batch, built and checked; nothing is sent."""
        prepared = []
        for run in runs:
            attempt = attempts.get(run.run_name, 1)
            built = self.backend.placed(run)
            node = build_command_node(
                built,
                attempt=attempt,
                code=self.code(str(run.spec.get("code_root", "."))),
                environment=self.environment_id(built),
                latest=self.latest_versions(run),
                resolve_checkpoint=self.backend.resolve_checkpoint,
            )
            node.environment_variables.update(self.backend.environment_variables)
            if built is not run:  # the recorded spec is the manifest's, which the hash covers
                node.environment_variables[RUN_SPEC_ENV] = run_spec_env(run)
            check_job(node, run)
            prepared.append(Prepared(run, attempt, job_name(run.run_name, attempt), node))
        return prepared

    def send(self, prepared: Sequence[Prepared]) -> list[Submitted]:
        """Send each job; stop at the first refusal (or Ctrl-C) with what was accepted."""
        done: list[Submitted] = []
        for index, item in enumerate(prepared):
            try:
                done.append(self.backend._send(item))
            except (Exception, KeyboardInterrupt) as exc:
                raise SubmissionStopped(
                    done, [p.run.run_name for p in prepared[index:]], exc
                ) from exc
        return done


def placed_on(run: RunSpec, default_compute: str | None) -> RunSpec:
    """``run`` as it is built into a job: a run whose target is ``local`` goes to
    ``default_compute`` when there is one (a backend opened for Azure ML alone)."""
    target = str(run.spec.get("compute", {}).get("target", LOCAL_TARGET))
    if target != LOCAL_TARGET or not default_compute:
        return run
    compute = {**run.spec.get("compute", {}), "target": default_compute}
    return replace(run, spec={**run.spec, "compute": compute})


__all__ = ["Prepared", "Submission", "placed_on"]
