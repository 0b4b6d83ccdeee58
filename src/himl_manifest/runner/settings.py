"""One settings object for a run, whether it comes from `himl-runner` flags or a run spec.

`himl-runner --model=X --max_epochs=5` and `himl run spec.json` both end up as a
:class:`RunSettings`, which :func:`himl_manifest.runner.execute.execute` runs: one code path.
Container fields are kept as *overrides* (field name -> text or JSON value); they are checked
against the container's own field types when the container is built.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himl_manifest import paths
from himl_manifest.errors import ConfigError, UsageError
from himl_manifest.model import checkpoint_source
from himl_manifest.records import (
    INPUT_CHECKPOINT,
    INPUT_DATASET_PREFIX,
    display_name,
    plain_tags,
    run_experiment,
)
from himl_manifest.spec import CROSSVAL_COUNT, RunSpec

TRAIN, INFERENCE, EVALUATION = "train", "inference", "evaluation"
MODES = (TRAIN, INFERENCE, EVALUATION)


@functools.cache
def _runner_option(option: str) -> dict[str, Any]:
    from himl_manifest.manifest.schema import resolve, schema

    return resolve(resolve(schema()["properties"]["runner"])["properties"][option])


def runner_choices(option: str) -> tuple[str, ...]:
    """The allowed values of a runner setting (``log_level``, ``debug_ddp``) as the manifest
    schema's ``runner`` section defines them: their one definition, for flags and specs alike."""
    return tuple(str(value) for value in _runner_option(option)["enum"])


def runner_default(option: str) -> str:
    """The default of a runner setting, from the manifest schema's ``runner`` section."""
    return str(_runner_option(option)["default"])


@dataclass
class RunSettings:
    """Everything `execute` needs to know about one run (or one local seed sweep)."""

    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    model_variant: str | None = None
    mode: str = TRAIN
    cluster: str = ""
    num_nodes: int = 1
    log_level: str = field(default_factory=lambda: runner_default("log_level"))
    debug_ddp: str = field(default_factory=lambda: runner_default("debug_ddp"))
    tracking_uri: str | None = None
    output_dir: Path | None = None
    jobs: int | None = None
    #: The deterministic run name of a run spec (also the run folder's suffix).
    run_name: str | None = None
    #: Tags recorded on the run besides the runner's own (e.g. the manifest's tags).
    tags: dict[str, str] = field(default_factory=dict)
    #: The settings as given (run spec JSON or flags), saved as run_spec.json.
    source: dict[str, Any] = field(default_factory=dict)
    #: The command-line flags, to start one child per seed with `--different_seeds`.
    argv: list[str] = field(default_factory=list)
    #: Where overrides came from, for error messages ("flag", "params", ...).
    origin: str = "flags"
    #: The Azure ML settings of `--cluster` (``conda_env``, ``docker_shm_size``,
    #: ``wait_for_completion``, ``max_run_duration``, ``workspace_config_path``,
    #: ``identity_based_auth``, ``mount_in_azureml``): :mod:`himl_manifest.runner.submit`.
    azure: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        for option in ("log_level", "debug_ddp"):
            choices = runner_choices(option)
            if str(getattr(self, option)).upper() not in choices:
                raise ConfigError(f"{option} must be one of {', '.join(choices)}")
        if self.num_nodes < 1:
            raise ConfigError(f"num_nodes must be >= 1, not {self.num_nodes}")


def src_checkpoint(spec: Mapping[str, Any], root: Path) -> tuple[str, str | None] | None:
    """A spec's ``checkpoint.source`` as a `--src_checkpoint` value and an optional sha256
    (whether it is trusted: :func:`checkpoint_trusted`)."""
    source = checkpoint_source(spec)
    if source is None:
        return None
    if source.path is not None:
        return str((root / source.path).resolve()), None
    if source.url is not None:
        return source.url, source.sha256
    reference = source.run_reference()
    if reference is None:
        raise ConfigError(
            f"checkpoint source experiment {source.experiment!r} was not resolved to a "
            "run (run specs written by apply name the upstream run)"
        )
    return reference, None


def checkpoint_trusted(spec: Mapping[str, Any]) -> bool:
    """Whether a spec marks its URL checkpoint source ``trusted: true`` (local files and runs
    of this project are trusted whatever it says: ``checkpoints.is_trusted``)."""
    source = checkpoint_source(spec)
    return source is not None and source.kind == "url" and source.trusted


def _is_azure(dataset: Mapping[str, Any]) -> bool:
    return "azure" in dataset or "datastore" in dataset


def _dataset_overrides(
    datasets: list[Mapping[str, Any]], root: Path, mounted: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """``azure_datasets`` (in manifest order: the order of the job's ``dataset_<i>`` inputs),
    ``local_datasets`` and ``dataset_mountpoints`` of a spec's datasets.

    ``mounted`` (index among the Azure datasets -> folder; inside an Azure ML job, where
    ``--input dataset_<i>=PATH`` says where the service put it): ``local_datasets[i]`` is then
    the folder of Azure dataset ``i`` (its ``local`` copy when it has no folder), followed by
    the ``local``-only datasets."""
    azure_ones = [d for d in datasets if _is_azure(d)]
    azure = [
        str(d["azure"]) if "azure" in d else f"{d['datastore']}/{d['path']}" for d in azure_ones
    ]
    if mounted:
        local = []
        for index, dataset in enumerate(azure_ones):
            if index in mounted:
                local.append(str(mounted[index]))
            elif "local" in dataset:
                local.append(str((root / dataset["local"]).resolve()))
            else:
                raise UsageError(
                    f"Azure dataset {index} ({azure[index]}) has no folder: give "
                    f"--input {INPUT_DATASET_PREFIX}{index}=PATH (the inputs of datasets "
                    f"{', '.join(str(i) for i in sorted(mounted))} were given)"
                )
        local += [str((root / d["local"]).resolve()) for d in datasets if not _is_azure(d)]
    else:
        local = [str((root / d["local"]).resolve()) for d in datasets if "local" in d]
    mounts = [str(d["mountpoint"]) for d in datasets if "mountpoint" in d]
    out: dict[str, Any] = {}
    if azure:
        out["azure_datasets"] = azure
    if local:
        out["local_datasets"] = local
    if mounts:
        out["dataset_mountpoints"] = mounts
    return out


def input_names(spec: Mapping[str, Any]) -> list[str]:
    """The ``--input`` names a run spec takes: ``checkpoint``, and ``dataset_<i>`` for each of
    its Azure datasets (the names of the job's inputs: ``backends.azureml.jobs``)."""
    count = sum(1 for d in spec.get("datasets", []) if _is_azure(d))
    return [INPUT_CHECKPOINT, *(f"{INPUT_DATASET_PREFIX}{i}" for i in range(count))]


def check_inputs(inputs: Mapping[str, str], spec: Mapping[str, Any]) -> None:
    """A :class:`UsageError` for an input name the spec does not take, or an empty path."""
    known = input_names(spec)
    for name, path in inputs.items():
        if name not in known:
            raise UsageError(
                f"--input {name}: unknown input (this run spec takes {', '.join(known)})"
            )
        if not str(path).strip():
            raise UsageError(f"--input {name}: empty path")


def parse_inputs(values: Sequence[str], spec: Mapping[str, Any]) -> dict[str, str]:
    """``NAME=PATH`` values of ``himl run --input`` (an Azure ML job's inputs, where the
    service put each) -> ``{name: path}``, names checked (:func:`check_inputs`)."""
    found: dict[str, str] = {}
    for value in values:
        name, equals, path = value.partition("=")
        name = name.strip()
        if not equals or not name:
            raise UsageError(f"--input {value!r}: expected NAME=PATH")
        if name in found:
            raise UsageError(f"--input {name} given twice")
        found[name] = path
    check_inputs(found, spec)
    return found


def check_params(params: Mapping[str, Any], origin: str) -> None:
    """Refuse ``params`` that name a trainer option or a field the manifest sets elsewhere.

    `himl validate` reports the same (the rule is
    :func:`himl_manifest.manifest.semantic.params_conflict`); this catches a run spec that was
    written by hand or by an older version.
    """
    from himl_manifest.manifest.semantic import params_conflict

    problems = []
    for name in params:
        conflict = params_conflict(str(name))
        if conflict is not None:
            message, hint = conflict
            problems.append(f"{origin}: params.{name}: {message} ({hint})")
    if problems:
        raise ConfigError("\n".join(problems))


def _spec_overrides(
    run: RunSpec, root: Path, inputs: Mapping[str, str] | None = None
) -> dict[str, Any]:
    spec = run.spec
    inputs = inputs or {}
    mounted = {
        int(name[len(INPUT_DATASET_PREFIX) :]): str(Path(path).resolve())
        for name, path in inputs.items()
        if name.startswith(INPUT_DATASET_PREFIX)
    }
    params = spec.get("params", {})
    check_params(params, f"run spec {run.run_name}")
    overrides: dict[str, Any] = dict(spec.get("trainer", {}))
    overrides.update(params)
    overrides["random_seed"] = run.seed
    if run.fold is not None:  # a fold's run: the runner seeds it with seed + fold + 1
        overrides["crossval_count"] = int(spec.get(CROSSVAL_COUNT, 0))
        overrides["crossval_index"] = run.fold
    overrides.update(_dataset_overrides(spec.get("datasets", []), root, mounted))
    checkpoint = spec.get("checkpoint", {})
    resolved = src_checkpoint(spec, root)
    if resolved is not None:
        src, sha = resolved
        overrides["src_checkpoint"] = src
        if sha:
            overrides["src_checkpoint_sha256"] = sha
        if checkpoint_trusted(spec):
            overrides["src_checkpoint_trusted"] = True
    if checkpoint.get("resume"):
        overrides["resume_training"] = True
    if run.resume_from:
        overrides["src_checkpoint"] = run.resume_from
        overrides["resume_training"] = True
    if INPUT_CHECKPOINT in inputs:
        # The file the job's checkpoint input holds (what the run reference or resume_from
        # named, fetched by the service): a local file, trusted like one.
        overrides["src_checkpoint"] = str(Path(inputs[INPUT_CHECKPOINT]).resolve())
        overrides.pop("src_checkpoint_sha256", None)
        overrides.pop("src_checkpoint_trusted", None)
    if spec.get("mode") == INFERENCE:
        overrides["run_inference_only"] = True
    tracking = spec.get("tracking", {})
    overrides["experiment"] = run_experiment(run)  # unset: the manifest's name, not the class
    display = tracking.get("display_name")
    overrides["tag"] = display_name(run.run_name, display)
    if tracking.get("log_from_vm"):
        overrides["log_from_vm"] = True
    return overrides


def from_run_spec(
    run: RunSpec,
    *,
    output_dir: Path | None = None,
    tracking_uri: str | None = None,
    root: Path | None = None,
    inputs: Mapping[str, str] | None = None,
) -> RunSettings:
    """The settings of the run a spec describes (`himl run`).

    ``inputs``: an Azure ML job's inputs, name -> where the service put them (``--input``,
    names checked by :func:`parse_inputs`): ``dataset_<i>`` is the folder of the spec's
    ``i``-th Azure dataset, ``checkpoint`` the file the run starts or resumes from."""
    spec = run.spec
    check_inputs(inputs or {}, spec)
    root = root or paths.project_root()
    compute = spec.get("compute", {})
    runner = spec.get("runner", {})
    target = str(compute.get("target", "local"))
    return RunSettings(
        model=str(spec["container"]),
        overrides=_spec_overrides(run, root, inputs),
        model_variant=spec.get("model_variant"),
        mode=EVALUATION if spec.get("mode") == EVALUATION else TRAIN,
        # Inside the job the cluster has already been chosen: nothing to submit.
        cluster="",
        num_nodes=int(compute.get("num_nodes", 1)),
        log_level=str(runner.get("log_level", runner_default("log_level"))),
        debug_ddp=str(runner.get("debug_ddp", runner_default("debug_ddp"))),
        tracking_uri=tracking_uri,
        output_dir=output_dir,
        run_name=run.run_name,
        tags={**plain_tags(spec.get("tags")), "himl.compute_target": target},
        source=json.loads(run.to_json()),
        origin=f"run spec {run.run_name}",
    )
