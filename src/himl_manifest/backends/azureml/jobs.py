"""One :class:`~himl_manifest.spec.RunSpec` attempt -> one Azure ML ``CommandJob``.

The pure half (names, command, inputs, tags, properties, resources) is plain data and needs no
SDK; :func:`build_command_job` alone imports azure-ai-ml, and turns that data into the job
(docs/azureml.md, "What a job looks like"):

- name: :func:`job_name` (attempt 1: the run name, the idempotency key; attempt N:
  ``<run name>-a<N>``, since properties are add-only and the SDK stamps git facts on each
  submission);
- experiment and display name from :mod:`~himl_manifest.records`, set on the job (the ``command()``
  node drops ``experiment_name``);
- the run spec reaches the job as the environment variable :data:`RUN_SPEC_ENV` (compact
  JSON, at most :data:`MAX_RUN_SPEC_ENV` characters), read by
  ``himl run --spec-env HIML_RUN_SPEC``; one code snapshot then serves every run;
- datasets and the checkpoint as job inputs, handed to the command as
  ``--input <name>=${{inputs.<name>}}``;
- identity and provenance facts as properties (add-only, like identity), lifecycle state and
  the cosmetic tags as tags (changeable in place), the description as the job's description.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from himl_manifest.errors import ConfigError
from himl_manifest.model import (
    SERVICE_MAX_DESCRIPTION,
    SERVICE_MAX_VALUE,
    Lifecycle,
    checkpoint_source,
)
from himl_manifest.records import (
    INPUT_CHECKPOINT,
    INPUT_DATASET_PREFIX,
    OUTPUTS_DIR,
    TAG_CONTAINER,
    TAG_MODE,
    TAG_RESUME_FROM,
    TAG_STATE,
    TAG_USER_PREFIX,
    cap,
    display_name,
    identity_facts,
    parse_run_reference,
    run_experiment,
)
from himl_manifest.spec import RunSpec, canonical_json, find_conda_file

if TYPE_CHECKING:
    from azure.ai.ml.entities import Command, CommandJob, Environment

#: The environment variable that carries the run spec JSON into the job.
RUN_SPEC_ENV = "HIML_RUN_SPEC"
#: Our own bound on that variable (the service documents none; Linux refuses one environment
#: string over 128 KiB). A spec is a few KB; this leaves room and fails early, not in the job.
MAX_RUN_SPEC_ENV = 32_000
#: Base image when the manifest names none: Azure ML's curated OpenMPI/Ubuntu image, which
#: has conda and the MPI libraries a multi-node PyTorch job needs.
DEFAULT_IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"
#: The job's command; ``--input`` options are appended for each input.
BASE_COMMAND = (
    f"python -m himl_manifest.cli.main run --spec-env {RUN_SPEC_ENV} --output-dir {OUTPUTS_DIR}"
)
#: Input name of the checkpoint the run starts or resumes from; input name prefix of the Azure
#: datasets, numbered in manifest order among the Azure ones (the runner's `--input` names).
CHECKPOINT_INPUT = INPUT_CHECKPOINT
DATASET_INPUT = INPUT_DATASET_PREFIX
_MODES = {"mount": "ro_mount", "download": "download"}
#: The service's limits on a job (:mod:`himl_manifest.model`): a property or tag value, the
#: description.
MAX_VALUE = SERVICE_MAX_VALUE
MAX_DESCRIPTION = SERVICE_MAX_DESCRIPTION
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def job_name(run_name: str, attempt: int) -> str:
    """The Azure ML job of one attempt: the run name itself for attempt 1 (the idempotency
    key), ``<run name>-a<attempt>`` after (each attempt needs its own job)."""
    if attempt < 1:
        raise ValueError(f"attempt must be >= 1, not {attempt}")
    return run_name if attempt == 1 else f"{run_name}-a{attempt}"


@dataclass(frozen=True)
class InputSpec:
    """One job input, as plain data. A dataset's ``mountpoint`` is not sent with it:
    azure-ai-ml 1.35's own client-side checks cannot take ``path_on_compute`` for a job built
    in code (it fails inside the SDK), so the runner in the job links the mountpoint to where
    the service put the input (``--input dataset_<i>=PATH``)."""

    name: str
    type: str  # "uri_folder" | "uri_file"
    path: str
    mode: str  # "ro_mount" | "download"


# --- the pure half ---------------------------------------------------------------------------


def run_spec_env(run: RunSpec) -> str:
    """The run spec as the job gets it: compact, key-sorted JSON (the format of ``to_json``)."""
    import json

    text = canonical_json(json.loads(run.to_json()))
    if len(text) > MAX_RUN_SPEC_ENV:
        raise ConfigError(
            f"{run.run_name}: the run spec is {len(text)} characters, over the "
            f"{MAX_RUN_SPEC_ENV} an Azure ML job takes in {RUN_SPEC_ENV} "
            "(a long description or many params?)"
        )
    return text


def data_asset(dataset: Mapping[str, Any]) -> tuple[str, str | None]:
    """``(name, version)`` of a dataset's Azure data asset (version None: the latest)."""
    name, _, version = str(dataset["azure"]).partition(":")
    return name, version or None


def dataset_inputs(
    spec: Mapping[str, Any], latest: Mapping[str, str] | None = None
) -> list[InputSpec]:
    """The Azure datasets of a spec as inputs (``local``-only datasets, and the ``local``
    fallbacks of Azure ones, are not used on Azure ML). ``latest``: data asset name -> the
    version its latest resolved to (the workspace's answer at submission), so a job names the
    exact version it reads; unresolved, ``<name>@latest`` (the SDK resolves that form; with
    the ``azureml:`` prefix it looks the asset up under the prefixed name)."""
    inputs: list[InputSpec] = []
    for dataset in spec.get("datasets") or []:
        if "azure" in dataset:
            name, version = data_asset(dataset)
            version = version or (latest or {}).get(name)
            path = f"azureml:{name}:{version}" if version else f"{name}@latest"
        elif "datastore" in dataset:
            path = f"azureml://datastores/{dataset['datastore']}/paths/{str(dataset['path']).strip('/')}"
        else:
            continue
        inputs.append(
            InputSpec(
                name=f"{DATASET_INPUT}{len(inputs)}",
                type="uri_folder",
                path=path,
                mode=_MODES[str(dataset.get("mode", "mount"))],
            )
        )
    return inputs


def checkpoint_uri(reference: str) -> str:
    """``<run>[:<dir/>file.ckpt]`` -> the file in the outputs of the job named ``<run>``:
    ``azureml://jobs/<job>/outputs/artifacts/paths/outputs/<path>`` (the run folder of a job
    is its ``outputs/``). The default job of a run is its first attempt; a store that knows
    the attempts resolves the reference itself (``RunStore.resolve_checkpoint``)."""
    run, path = parse_run_reference(reference)
    return f"azureml://jobs/{run}/outputs/artifacts/paths/{OUTPUTS_DIR}/{path.as_posix()}"


def checkpoint_reference(run: RunSpec) -> str | None:
    """The run reference this run's weights come from: the run it resumes, else a checkpoint
    source naming a run (or another experiment's resolved run); None otherwise (a path in the
    snapshot or a URL: the runner reads those itself)."""
    if run.resume_from:
        return run.resume_from
    source = checkpoint_source(run.spec)
    if source is None or source.kind not in ("run", "experiment"):
        return None
    reference = source.run_reference()
    if reference is None:
        raise ConfigError(
            f"{run.run_name}: checkpoint source experiment {source.experiment!r} was not "
            "resolved to a run"
        )
    return reference


def checkpoint_input(run: RunSpec, resolve: Callable[[str], str] | None = None) -> InputSpec | None:
    """The checkpoint input of a run, if its weights come from another job."""
    reference = checkpoint_reference(run)
    if reference is None:
        return None
    uri = (resolve or checkpoint_uri)(reference)
    return InputSpec(CHECKPOINT_INPUT, "uri_file", uri, "download")


def job_command(inputs: list[InputSpec]) -> str:
    """The job's command: ``himl run`` with the spec from the environment, and each input's
    path on the compute as ``--input <name>=<path>``."""
    parts = [BASE_COMMAND]
    parts += [f"--input {item.name}=${{{{inputs.{item.name}}}}}" for item in inputs]
    return " ".join(parts)


def job_properties(
    run: RunSpec, attempt: int, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Identity and provenance: small facts, add-only like the facts they record (the run
    spec itself is in the job definition: :data:`RUN_SPEC_ENV`). Empty values are left out
    (read them back with a default); each value within the service's limit."""
    properties = {
        **identity_facts(run, attempt),
        TAG_CONTAINER: str(run.spec.get("container", "")),
        TAG_MODE: str(run.spec.get("mode", "train")),
        TAG_RESUME_FROM: run.resume_from or "",
        **(extra or {}),
    }
    return {key: cap(value, MAX_VALUE) for key, value in properties.items() if value != ""}


def user_tags(spec: Mapping[str, Any]) -> dict[str, str]:
    """The manifest's tags as job tags (``himl.tag.<key>``)."""
    return {
        f"{TAG_USER_PREFIX}{key}": cap(value, MAX_VALUE)
        for key, value in (spec.get("tags") or {}).items()
    }


def job_tags(run: RunSpec, state: Lifecycle = Lifecycle.ACTIVE) -> dict[str, str]:
    """What changes in place: the lifecycle state and the manifest's tags."""
    return {TAG_STATE: state.value, **user_tags(run.spec)}


def job_description(run: RunSpec) -> str | None:
    description = run.spec.get("description")
    return cap(description, MAX_DESCRIPTION) if description else None


def job_display_name(run: RunSpec) -> str:
    return display_name(run.run_name, run.spec.get("tracking", {}).get("display_name"))


def job_experiment(run: RunSpec) -> str:
    """The job's experiment: the same rule as the local store's (:func:`~.records.run_experiment`:
    ``tracking.experiment``, else the manifest's experiment name)."""
    return run_experiment(run)


def processes_per_node(spec: Mapping[str, Any]) -> int:
    """Processes per node: ``trainer.devices`` when a count, the length of a device list,
    else 1 (``auto``: Lightning decides on one node; preflight warns about it on several)."""
    devices = spec.get("trainer", {}).get("devices", "auto")
    if isinstance(devices, bool):
        return 1
    if isinstance(devices, int):
        return max(devices, 1)
    if isinstance(devices, list):
        return max(len(devices), 1)
    return 1


def duration_seconds(value: int | str) -> int:
    """``compute.max_run_duration`` (seconds, or a number with s, m, h or d) in whole seconds."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _DURATION.match(str(value).strip())
    if not match:
        raise ConfigError(
            f"max_run_duration {value!r}: expected seconds, or a number with s, m, h or d"
        )
    return max(1, math.ceil(float(match.group(1)) * _UNITS[match.group(2)]))


def compute_target(run: RunSpec) -> str:
    target = str(run.spec.get("compute", {}).get("target", "local"))
    if target == "local":
        raise ConfigError(
            f"{run.run_name}: compute.target is 'local': "
            "name an Azure ML cluster to run on Azure ML"
        )
    return target


def environment_image(spec: Mapping[str, Any]) -> str:
    return str(spec.get("environment", {}).get("image") or DEFAULT_IMAGE)


# --- the SDK half ----------------------------------------------------------------------------


def job_environment(run: RunSpec, root: Path) -> Environment:
    """The job's environment: ``environment.image`` (default :data:`DEFAULT_IMAGE`) with the
    resolved, self-contained conda file (:mod:`.environment`), or the image alone when there
    is no conda file. An anonymous environment: its version is a hash of its content."""
    from azure.ai.ml.entities import Environment

    from himl_manifest.backends.azureml.environment import conda_environment

    spec = run.spec
    conda_path = find_conda_file(root, spec)
    if conda_path is not None and conda_path.is_file():
        return Environment(
            image=environment_image(spec), conda_file=conda_environment(conda_path, root=root)
        )
    if spec.get("environment", {}).get("image"):
        return Environment(image=environment_image(spec))
    missing = conda_path or root / "environment.yml"
    raise ConfigError(
        f"{run.run_name}: no conda file ({missing}) and no environment.image: "
        "the job would have neither PyTorch nor himl-manifest"
    )


def build_command_node(
    run: RunSpec,
    *,
    attempt: int,
    code: str,
    environment: str | Environment,
    latest: Mapping[str, str] | None = None,
    resolve_checkpoint: Callable[[str], str] | None = None,
    state: Lifecycle = Lifecycle.ACTIVE,
    extra_properties: Mapping[str, str] | None = None,
) -> Command:
    """The ``Command`` of attempt ``attempt`` of ``run``: what ``jobs.create_or_update``
    takes (azure-ai-ml 1.35 refuses a ``CommandJob``).

    ``code``: the code asset's ARM id (:mod:`.upload`) or a local folder; ``environment``: the
    registered environment's ARM id, or the entity (:func:`job_environment`); ``latest``: data
    asset name -> the version its latest resolved to; ``resolve_checkpoint``: run reference ->
    URI of the checkpoint file (the store's, which knows which attempt completed; default
    :func:`checkpoint_uri`); ``extra_properties``: more facts to record."""
    from azure.ai.ml import Input, PyTorchDistribution, command
    from azure.ai.ml.entities import UserIdentityConfiguration

    spec = run.spec
    compute = spec.get("compute", {})
    target = compute_target(run)
    inputs = dataset_inputs(spec, latest)
    checkpoint = checkpoint_input(run, resolve_checkpoint)
    if checkpoint is not None:
        inputs.append(checkpoint)
    nodes = int(compute.get("num_nodes", 1))
    processes = processes_per_node(spec)
    distribution = (
        PyTorchDistribution(process_count_per_instance=processes)
        if nodes > 1 or processes > 1
        else None
    )
    timeout = compute.get("max_run_duration")
    node = command(
        name=job_name(run.run_name, attempt),
        display_name=job_display_name(run),
        description=job_description(run),
        command=job_command(inputs),
        code=code,
        environment=environment,
        environment_variables={RUN_SPEC_ENV: run_spec_env(run)},
        compute=target,
        instance_count=nodes,
        instance_type=compute.get("instance_type"),
        distribution=distribution,
        shm_size=compute.get("shm_size"),
        timeout=duration_seconds(timeout) if timeout is not None else None,
        priority=compute.get("priority"),
        identity=UserIdentityConfiguration() if compute.get("identity_based_auth") else None,
        inputs={
            item.name: Input(type=item.type, path=item.path, mode=item.mode) for item in inputs
        },
        tags=job_tags(run, state),
        properties=job_properties(run, attempt, extra_properties),
    )
    node.experiment_name = job_experiment(run)  # command() leaves it unset
    node.display_name = job_display_name(run)
    return node


def build_command_job(run: RunSpec, *, root: Path, **kwargs: Any) -> CommandJob:
    """The ``CommandJob`` of :func:`build_command_node` (what ``dump``/``load_job`` take),
    checked by the SDK (:func:`check_job`), with the environment built from ``root``'s conda
    file unless ``environment`` is given."""
    environment = kwargs.pop("environment", None) or job_environment(run, root)
    node = build_command_node(run, environment=environment, **kwargs)
    check_job(node, run)
    job = node._to_job()
    job.experiment_name = node.experiment_name  # _to_job() drops it
    job.display_name = node.display_name
    return job


def check_job(node: Command, run: RunSpec) -> None:
    """The client-side checks azure-ai-ml runs on a job before it sends one (the job's own
    schema validation, then its REST serialization), run here for a whole batch before its
    first job is sent: a job the SDK would refuse half way is refused before anything is."""
    from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object

    try:
        node._validate(raise_error=True)
        to_rest_job_object(node)
    except Exception as exc:
        raise ConfigError(
            f"{run.run_name}: azure-ai-ml's own checks refused the job "
            f"({type(exc).__name__}: {sdk_complaint(exc)})"
        ) from exc


def sdk_complaint(exc: BaseException) -> str:
    """What the SDK's validation said, in one line: its JSON result's errors (``path: the
    first sentence of the message``), else the message's first line."""
    import json

    message = str(getattr(exc, "message", None) or exc).strip() or type(exc).__name__
    try:
        errors = json.loads(message).get("errors") or []
    except (ValueError, AttributeError):
        errors = []
    said = [
        f"{item.get('path', '')}: {str(item.get('message', '')).split(';')[0].strip()}"
        for item in errors
        if isinstance(item, dict)
    ]
    if said:
        return "; ".join(said)
    return next((line.strip() for line in message.splitlines() if line.strip()), message)
