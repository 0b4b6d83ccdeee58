"""`himl-runner --cluster=NAME`: the flags become run specs, submitted like a manifest's.

A command line is the imperative form of a manifest. :func:`manifest_of` writes the manifest
document the flags stand for (checked against the manifest schema), and :func:`cluster_runs`
expands it into one :class:`~himl_manifest.spec.RunSpec` per seed, exactly as `himl apply`
expands a manifest file; :func:`submit_to_cluster` submits them through the Azure ML backend
(:class:`~himl_manifest.backends.azureml.store.AzureMLBackend`), so a job submitted from flags
and one submitted from a manifest are built, named and recorded by the same code.

What the flags become:

- ``--model`` / ``--model_variant``: ``container`` (the class's full name) / ``model_variant``;
- flags of the container's own fields: ``params``; trainer flags: ``trainer``;
- ``--random_seed=K``: ``seeds: [K]``; ``--different_seeds=N``: ``seeds: N`` (seeds 0..N-1,
  one job each, not a sweep), each job's display name ending in ``seed <k>``;
- ``--crossval_count=K``: ``crossval: {folds: K}`` (K jobs, one per fold, each display name
  ending in ``fold <i>``); with ``--crossval_index=I`` only that fold (``indices: [I]``);
- ``--cluster``, ``--num_nodes``, ``--docker_shm_size``, ``--max_run_duration``,
  ``--identity_based_auth``, ``--workspace_config_path``: ``compute``; ``--conda_env``:
  ``environment.conda_file``;
- the container's ``azure_datasets`` (with ``--dataset_mountpoints``; ``--mount_in_azureml``
  mounts them, else they are downloaded): ``datasets``;
- ``--src_checkpoint`` (a file in the project, an https URL, or a run reference) and
  ``--resume_training``: ``checkpoint``; ``--run_inference_only`` / ``--mode=eval_full``:
  ``mode``;
- ``--experiment`` / ``--tag``: ``tracking.experiment`` / ``tracking.display_name``;
- ``--log_level`` / ``--debug_ddp``: ``runner``;
- tags, as hi-ml sets them: ``commandline_args`` (the flags as typed), ``tag`` (the display
  name) and the container's ``get_additional_tags()`` (job tags ``himl.tag.<name>``).

The job gets ``TORCH_DISTRIBUTED_DEBUG`` from ``--debug_ddp`` (when not OFF) as an environment
variable beside the run spec. ``--wait_for_completion`` waits for every job to end.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import re
import secrets
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from himl_manifest import paths
from himl_manifest.errors import ConfigError, UsageError
from himl_manifest.model import WORKFLOW_FIELDS
from himl_manifest.records import cap, plain_tags
from himl_manifest.runner.container import LightningContainer, trainer_options
from himl_manifest.runner.results import RunResult
from himl_manifest.runner.settings import EVALUATION, INFERENCE, TRAIN, RunSettings
from himl_manifest.spec import RunSpec

logger = logging.getLogger(__name__)

#: The tag holding the command line (hi-ml's name for it).
TAG_COMMANDLINE = "commandline_args"
#: The tag holding the display name (hi-ml's name for it).
TAG_TAG = "tag"
DEBUG_ENV = "TORCH_DISTRIBUTED_DEBUG"
_TAG_KEY = re.compile(r"[^A-Za-z0-9_.-]")
_MAX_MANIFEST_TAG = 1000


def _plain(value: Any) -> Any:
    """A field's value as manifest JSON (paths as text, enums as their value)."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _slug(text: str) -> str:
    """A manifest name from a class name: ``HelloWorld`` -> ``helloworld``."""
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:50].strip("-")
    return slug or "runner"


def _inside(root: Path, value: str | Path, what: str) -> str:
    """``value`` (absolute, or relative to the working directory) relative to the project
    root: a job sees the project's snapshot, nothing outside it."""
    path = Path(value)
    path = (path if path.is_absolute() else Path.cwd() / path).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ConfigError(
            f"{what} {value} is outside the project ({root}): an Azure ML job only sees the "
            "project's files"
        )
    return path.relative_to(root.resolve()).as_posix()


def _checkpoint(container: LightningContainer, root: Path) -> dict[str, Any]:
    source = container.src_checkpoint
    section: dict[str, Any] = {}
    if source:
        text = str(source)
        if text.startswith("https://"):
            url: dict[str, Any] = {"url": text}
            if container.src_checkpoint_sha256:
                url["sha256"] = container.src_checkpoint_sha256
            if container.src_checkpoint_trusted:
                url["trusted"] = True
            section["source"] = url
        elif Path(text).is_file():
            section["source"] = {"path": _inside(root, text, "--src_checkpoint")}
        else:
            section["source"] = {"run": text}
    if container.resume_training:
        section["resume"] = True
    return section


def _datasets(container: LightningContainer, mount: bool) -> list[dict[str, Any]]:
    """The container's Azure datasets: ``datastore/path`` names a datastore folder, anything
    else a data asset (``name[:version]``); local copies are not used on Azure ML."""
    datasets: list[dict[str, Any]] = []
    mountpoints = list(container.dataset_mountpoints)
    for index, name in enumerate(container.azure_datasets):
        store, slash, folder = str(name).partition("/")
        entry: dict[str, Any] = (
            {"datastore": store, "path": folder} if slash and folder else {"azure": str(name)}
        )
        entry["mode"] = "mount" if mount else "download"
        if index < len(mountpoints):
            entry["mountpoint"] = str(mountpoints[index])
        datasets.append(entry)
    return datasets


def _tags(settings: RunSettings, container: LightningContainer) -> dict[str, str]:
    tags = {
        TAG_COMMANDLINE: cap(" ".join(settings.argv), _MAX_MANIFEST_TAG),
        TAG_TAG: cap(container.tag, _MAX_MANIFEST_TAG),
    }
    for key, value in plain_tags(container.get_additional_tags()).items():
        name = _TAG_KEY.sub("_", str(key))[:64] or "_"
        tags[name] = cap(value, _MAX_MANIFEST_TAG)
    return {k: v for k, v in tags.items() if v != ""}


def manifest_of(settings: RunSettings, container: LightningContainer, root: Path) -> dict[str, Any]:
    """The manifest document the flags stand for (validated against the schema)."""
    from himl_manifest.manifest.schema import format_path, problems

    azure = settings.azure
    trainer_names = set(trainer_options())
    overrides = {k: _plain(v) for k, v in settings.overrides.items()}
    trainer = {k: v for k, v in overrides.items() if k in trainer_names}
    params = {
        k: v for k, v in overrides.items() if k not in trainer_names and k not in WORKFLOW_FIELDS
    }
    cls = type(container)
    if settings.mode == EVALUATION:
        mode = EVALUATION
    else:
        mode = INFERENCE if container.run_inference_only else TRAIN
    seeds: int | list[int] = (
        container.different_seeds if container.different_seeds > 0 else [container.random_seed]
    )
    compute: dict[str, Any] = {"target": settings.cluster, "num_nodes": settings.num_nodes}
    if azure.get("docker_shm_size"):
        compute["shm_size"] = str(azure["docker_shm_size"])
    if azure.get("max_run_duration"):
        compute["max_run_duration"] = str(azure["max_run_duration"])
    if azure.get("identity_based_auth"):
        compute["identity_based_auth"] = True
    if azure.get("workspace_config_path"):
        compute["workspace_config"] = _inside(
            root, azure["workspace_config_path"], "--workspace_config_path"
        )
    document: dict[str, Any] = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": _slug(cls.__name__),
        "container": f"{cls.__module__}.{cls.__qualname__}",
        "mode": mode,
        "seeds": seeds,
        "compute": compute,
        "runner": {"log_level": settings.log_level, "debug_ddp": settings.debug_ddp},
        "tracking": {"experiment": container.effective_experiment},
    }
    if container.is_crossvalidation_enabled:
        crossval: dict[str, Any] = {"folds": container.crossval_count}
        if "crossval_index" in settings.overrides:  # one fold; else every fold
            crossval["indices"] = [container.crossval_index]
        document["crossval"] = crossval
    if settings.model_variant:
        document["model_variant"] = settings.model_variant
    if params:
        document["params"] = params
    if trainer:
        document["trainer"] = trainer
    datasets = _datasets(container, bool(azure.get("mount_in_azureml")))
    if datasets:
        document["datasets"] = datasets
    checkpoint = _checkpoint(container, root)
    if checkpoint:
        document["checkpoint"] = checkpoint
    if container.tag:
        document["tracking"]["display_name"] = container.tag
    if azure.get("conda_env"):
        document["environment"] = {"conda_file": _inside(root, azure["conda_env"], "--conda_env")}
    tags = _tags(settings, container)
    if tags:
        document["tags"] = tags
    found = problems(document)
    if found:
        lines = "\n".join(f"  {format_path(p.path)}: {p.message}" for p in found)
        raise UsageError(f"these flags do not make a valid Azure ML job:\n{lines}")
    return document


def cluster_runs(
    settings: RunSettings, container: LightningContainer, root: Path | None = None
) -> list[RunSpec]:
    """One run spec per seed and fold of the manifest the flags stand for (as `himl apply`
    expands)."""
    from himl_manifest.manifest.build import normalize
    from himl_manifest.spec import Experiment, expand

    root = (root or paths.project_root()).resolve()
    document = manifest_of(settings, container, root)
    spec = normalize(document)
    runs = expand([Experiment(name=spec["name"], spec=spec, manifest_path="", root=root)])
    several_folds = len({run.fold for run in runs}) > 1
    if container.different_seeds <= 0 and not several_folds:
        return runs
    base = container.tag or type(container).__name__
    named = []
    for run in runs:  # the display name is cosmetic: the spec hash does not change
        label = f"{base} seed {run.seed}" if container.different_seeds > 0 else base
        label += f" fold {run.fold}" if several_folds else ""
        tracking = {**run.spec.get("tracking", {}), "display_name": label}
        named.append(replace(run, spec={**run.spec, "tracking": tracking}))
    return named


def invocation_id(now: dt.datetime | None = None) -> str:
    """What tells one invocation's runs from another's: UTC time and a random suffix."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    return f"{moment:%Y%m%d%H%M%S}-{secrets.token_hex(2)}"


def imperative_runs(runs: Sequence[RunSpec], root: Path, command: str) -> list[RunSpec]:
    """``runs`` as this invocation submits them. An imperative run is not a manifest run: each
    invocation submits new jobs (the reference's behaviour: the same command after a code
    change trains again), so each run name carries the invocation; the runs have no manifest
    path (no plan calls them orphans); their provenance is the repository's at submission, as
    apply stamps it on manifest runs (commit, branch, remote without credentials, dirty work
    tree, who submitted), with the command line in place of the manifest."""
    from himl_manifest.provenance import GitProvenance

    repository = GitProvenance.repository(GitProvenance(root).repo_facts())
    facts = {key: value for key, value in repository.items() if value is not None}
    facts["dirty"] = bool(facts.get("worktree_dirty"))
    facts["command"] = cap(command, _MAX_MANIFEST_TAG)
    invocation = invocation_id()
    return [
        replace(
            run,
            run_name=f"{run.run_name}-{invocation}",
            manifest_path="",
            provenance={**run.provenance, **facts},
        )
        for run in runs
    ]


def job_environment(settings: RunSettings) -> dict[str, str]:
    """Environment variables the jobs get besides the run spec."""
    debug = settings.debug_ddp.upper()
    return {DEBUG_ENV: debug} if debug != "OFF" else {}


def open_cluster_backend(root: Path, config: str | None) -> Any:
    """The backend of the remote executor kind (``--workspace_config_path`` first)."""
    from himl_manifest.backends.registry import AZUREML, open_backend

    return open_backend(AZUREML, root=root, workspace_config=config)


def _preflight(backend: Any, runs: Sequence[RunSpec]) -> None:
    """Pre-flight, as apply's: warnings are logged, errors stop before anything is sent."""
    from himl_manifest.diagnostics import errors_of, render_text

    problems = backend.preflight(runs)
    if problems:
        text = render_text(problems, len({p.file for p in problems}))
        for line in text.splitlines():
            logger.warning("%s", line)
    if errors_of(problems):
        raise ConfigError("pre-flight found problems: nothing was submitted")


def submit_to_cluster(
    settings: RunSettings,
    container: LightningContainer,
    *,
    root: Path | None = None,
    backend: Any = None,
) -> list[RunResult]:
    """Submit the jobs the flags stand for; wait for them with ``--wait_for_completion``."""
    from himl_manifest.backends.base import SubmitOutcome
    from himl_manifest.model import RunStatus

    root = (root or paths.project_root()).resolve()
    command = " ".join(["himl-runner", *settings.argv])
    runs = imperative_runs(cluster_runs(settings, container, root), root, command)
    if backend is None:
        config = settings.azure.get("workspace_config_path")
        backend = open_cluster_backend(root, str(config) if config else None)
    backend.environment_variables.update(job_environment(settings))
    _preflight(backend, runs)
    submitted = backend.submit(runs)
    mode = runs[0].spec.get("mode", TRAIN) if runs else TRAIN
    results: dict[str, RunResult] = {}
    for item in submitted:
        record = item.record
        run = next(r for r in runs if r.run_name == item.run_name)
        label = str(run.spec.get("tracking", {}).get("display_name") or run.run_name)
        ok = item.outcome != SubmitOutcome.CONFLICT
        word = "submitted" if item.outcome == SubmitOutcome.CREATED else str(item.outcome)
        job = record.run_id if record is not None else item.run_name
        logger.info("Azure ML job %s (%s): %s", job, label, word)
        results[item.run_name] = RunResult(
            output_dir=None,
            mode=str(mode),
            run_id=job,
            ok=ok,
            error="" if ok else f"{item.run_name}: {item.message or 'conflict'}",
            label=label,
        )
    wanted = [name for name, result in results.items() if result.ok]
    if settings.azure.get("wait_for_completion") and wanted:
        for record in backend.wait(wanted, progress=lambda p: logger.info("%s", p.message)):
            result = results.get(record.run_name)
            if result is None or record.run_id != result.run_id:
                continue
            if record.status != RunStatus.COMPLETED:
                result.ok = False
                result.error = record.error_tail or f"job {record.run_id} ended {record.status}"
    return list(results.values())
