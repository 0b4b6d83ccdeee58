"""One settings object for a run, whether it comes from `himl-runner` flags or a run spec.

`himl-runner --model=X --max_epochs=5` and `himl run spec.json` both end up as a
:class:`RunSettings`, which :func:`himl_manifest.runner.execute.execute` runs: one code path.
Container fields are kept as *overrides* (field name -> text or JSON value); they are checked
against the container's own field types when the container is built.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himl_manifest import paths
from himl_manifest.backends.protocol import display_name
from himl_manifest.errors import ConfigError
from himl_manifest.model import checkpoint_source
from himl_manifest.spec import RunSpec

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


def _dataset_overrides(datasets: list[Mapping[str, Any]], root: Path) -> dict[str, Any]:
    azure = [str(d["azure"]) for d in datasets if "azure" in d]
    azure += [f"{d['datastore']}/{d['path']}" for d in datasets if "datastore" in d]
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


def _spec_overrides(run: RunSpec, root: Path) -> dict[str, Any]:
    spec = run.spec
    params = spec.get("params", {})
    check_params(params, f"run spec {run.run_name}")
    overrides: dict[str, Any] = dict(spec.get("trainer", {}))
    overrides.update(params)
    overrides["random_seed"] = run.seed
    overrides.update(_dataset_overrides(spec.get("datasets", []), root))
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
    if spec.get("mode") == INFERENCE:
        overrides["run_inference_only"] = True
    tracking = spec.get("tracking", {})
    if tracking.get("experiment"):
        overrides["experiment"] = tracking["experiment"]
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
) -> RunSettings:
    """The settings of the run a spec describes (`himl run`)."""
    spec = run.spec
    root = root or paths.project_root()
    compute = spec.get("compute", {})
    runner = spec.get("runner", {})
    target = str(compute.get("target", "local"))
    tags = {str(k): str(v) for k, v in spec.get("tags", {}).items()}
    return RunSettings(
        model=str(spec["container"]),
        overrides=_spec_overrides(run, root),
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
        tags={**tags, "himl.compute_target": target},
        source=json.loads(run.to_json()),
        origin=f"run spec {run.run_name}",
    )
