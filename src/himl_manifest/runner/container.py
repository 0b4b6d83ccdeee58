"""`LightningContainer`: everything a run needs, in one class that users subclass.

A container holds plain Python attributes (its *fields*) and a few methods that build the model
and the data. Fields declared here, with a type annotation and a class default, are the trainer,
workflow, dataset and tracking settings of every run; a subclass adds its own fields either as
annotated class attributes or simply by setting ``self.x = ...`` in ``__init__``. Every public
field becomes a ``himl-runner --<field>=value`` flag and a manifest ``params`` key.

Precedence of a field's value: class default < the container's ``__init__`` <
:meth:`~LightningContainer.set_model_variant` < flags (or manifest params).

This module imports neither torch nor Lightning (container lookup must stay light).
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from himl_manifest.errors import ConfigError, ContainerError, HimlError

if TYPE_CHECKING:
    from pytorch_lightning import Callback, LightningDataModule, LightningModule

#: Names the experiment of every run, over ``--experiment`` and the class name (as in hi-ml).
EXPERIMENT_ENV = "HIML_EXPERIMENT_NAME"


@functools.cache
def trainer_options() -> tuple[str, ...]:
    """The Lightning ``Trainer`` options a run takes from its container, in schema order.

    Their one definition is the manifest schema's ``trainer`` section
    (``schema/experiment.v1.schema.json``, read through :mod:`himl_manifest.manifest.schema`).
    :class:`LightningContainer` declares a typed field with a default for each (a test holds
    the two equal), and :mod:`himl_manifest.runner.trainer` passes each one to ``Trainer``.
    """
    from himl_manifest.manifest.schema import resolve, schema

    return tuple(resolve(schema()["properties"]["trainer"])["properties"])


def _string_choices(node: dict[str, Any]) -> list[str]:
    from himl_manifest.manifest.schema import resolve

    node = resolve(node)
    found = [v for v in node.get("enum", []) if isinstance(v, str)]
    if isinstance(node.get("const"), str):
        found.append(node["const"])
    for branch in node.get("oneOf", []) + node.get("anyOf", []):
        found += _string_choices(branch)
    return found


@functools.cache
def trainer_choices(option: str) -> tuple[str, ...]:
    """The words a trainer option takes (``profiler``: simple, advanced, pytorch), from the
    schema's ``trainer`` section; empty for options that take no word (``max_epochs``)."""
    from himl_manifest.manifest.schema import resolve, schema

    node = resolve(schema()["properties"]["trainer"])["properties"].get(option, {})
    return tuple(dict.fromkeys(_string_choices(node)))


def check_trainer_value(option: str, value: Any) -> Any:
    """``value`` of trainer option ``option``, its word spelled as the schema spells it
    (``CPU`` -> ``cpu``: words are case-insensitive); ValueError for a word the schema does not
    allow (``--profiler=foo``), so it is refused before anything runs."""
    choices = trainer_choices(option)
    if not isinstance(value, str) or not choices:
        return value
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ValueError(f"{value!r} is not one of {', '.join(choices)}")


def instantiate(cls: type[LightningContainer], variant: str | None = None) -> LightningContainer:
    """``cls()``, switched to ``variant``: an exception of the user's ``__init__`` or
    ``set_model_variant`` becomes a :class:`ContainerError` naming the class."""
    try:
        container = cls()
    except HimlError:
        raise
    except Exception as exc:
        raise ContainerError(cls.__name__, "__init__()", exc) from exc
    if variant:
        try:
            container.set_model_variant(variant)
        except HimlError:
            raise
        except Exception as exc:
            raise ContainerError(cls.__name__, f"set_model_variant({variant!r})", exc) from exc
    return container


class LightningContainer:
    """Base class of every model configuration the runner can run (see docs/runner.md)."""

    # Trainer settings: one field per option of the schema's `trainer` section (see
    # trainer_options(); tests/runner/test_trainer_options.py holds them equal).
    max_epochs: Annotated[int, "Number of epochs to train."] = 100
    accelerator: Annotated[str, "Lightning accelerator: auto, cpu, gpu, cuda, mps."] = "auto"
    devices: Annotated[int | str | list[int], "Devices per node: a count, auto, or indices."] = (
        "auto"
    )
    strategy: Annotated[str, "Lightning strategy: auto, ddp, ddp_spawn, fsdp, ..."] = "auto"
    precision: Annotated[str, "Numeric precision: 32-true, 16-mixed, bf16-mixed, ..."] = "32-true"
    accumulate_grad_batches: Annotated[int, "Accumulate gradients over N batches."] = 1
    limit_train_batches: Annotated[int | float | None, "Fraction or number of batches."] = None
    limit_val_batches: Annotated[int | float | None, "Fraction or number of batches."] = None
    limit_test_batches: Annotated[int | float | None, "Fraction or number of batches."] = None
    val_check_interval: Annotated[int | float | None, "Validate every fraction/N batches."] = None
    check_val_every_n_epoch: Annotated[int, "Validate every N epochs."] = 1
    num_sanity_val_steps: Annotated[int, "Validation batches before training (-1: all)."] = 2
    deterministic: Annotated[bool | str | None, "Deterministic algorithms: true/false/warn."] = None
    benchmark: Annotated[bool | None, "cudnn.benchmark."] = None
    gradient_clip_val: Annotated[float | None, "Clip gradients at this value."] = None
    gradient_clip_algorithm: Annotated[str | None, "Clip by norm or value."] = None
    log_every_n_steps: Annotated[int, "Log training metrics every N steps."] = 50
    profiler: Annotated[str | None, "Lightning profiler: simple, advanced, pytorch."] = None
    detect_anomaly: Annotated[bool, "torch autograd anomaly detection."] = False

    # Workflow.
    random_seed: Annotated[int, "Seed of every random generator (seed_everything)."] = 42
    src_checkpoint: Annotated[
        str | None, "Checkpoint: a local path, an https URL, or <run>[:<dir/>file.ckpt]."
    ] = None
    src_checkpoint_sha256: Annotated[str | None, "Expected sha256 of a URL checkpoint."] = None
    src_checkpoint_trusted: Annotated[
        bool, "Unpickle a URL src_checkpoint in full (it can run code): only for a trusted source."
    ] = False
    resume_training: Annotated[bool, "Continue training from src_checkpoint (full state)."] = False
    run_inference_only: Annotated[bool, "No training: validate and test src_checkpoint."] = False
    different_seeds: Annotated[int, "Run seeds 0..N-1, each its own run (0: off)."] = 0
    crossval_count: Annotated[
        int, "Number of cross-validation folds (0: off); alone, runs every fold."
    ] = 0
    crossval_index: Annotated[int, "Which cross-validation fold this run trains (0..count-1)."] = 0

    # Datasets. (Mutable defaults are copied per instance in __init__.)
    azure_datasets: Annotated[list[str], "Azure ML data assets the container reads."] = []  # noqa: RUF012
    local_datasets: Annotated[list[Path], "Local dataset folders (first: local_dataset)."] = []  # noqa: RUF012
    dataset_mountpoints: Annotated[list[Path], "Where Azure datasets are mounted."] = []  # noqa: RUF012

    # Tracking.
    tag: Annotated[str, "Display name of the run."] = ""
    experiment: Annotated[str, "Experiment name (default: the container class name)."] = ""
    log_from_vm: Annotated[bool, "Also log a local run to the Azure ML workspace."] = False

    def __init__(self) -> None:
        # Mutable class defaults become per-instance copies.
        for klass in reversed(type(self).__mro__):
            for name in getattr(klass, "__annotations__", {}):
                if not name.startswith("_") and name in vars(klass):
                    setattr(self, name, copy.deepcopy(vars(klass)[name]))
        self._outputs_folder: Path | None = None

    # --- what users implement -------------------------------------------------------------------

    def create_model(self) -> LightningModule:
        """The LightningModule to train (required)."""
        raise NotImplementedError(f"{type(self).__name__} must implement create_model()")

    def get_data_module(self) -> LightningDataModule:
        """The data for training, validation and test (required)."""
        raise NotImplementedError(f"{type(self).__name__} must implement get_data_module()")

    def get_eval_data_module(self) -> LightningDataModule:
        """The data that `--mode=eval_full` tests on. Default: :meth:`get_data_module`."""
        return self.get_data_module()

    def get_trainer_arguments(self) -> dict[str, Any]:
        """Extra keyword arguments for `Trainer(...)`; they win over the trainer fields."""
        return {}

    def get_callbacks(self) -> list[Callback]:
        """Extra Lightning callbacks, added after the runner's own."""
        return []

    def get_additional_tags(self) -> dict[str, str]:
        """Extra tags recorded on the run."""
        return {}

    def set_model_variant(self, variant_name: str) -> None:
        """Switch to a named variant of the model (`--model_variant`); override to offer some."""
        raise ConfigError(
            f"{type(self).__name__} has no model variants (it does not override "
            f"set_model_variant), so --model_variant={variant_name!r} cannot be applied"
        )

    def validate(self) -> None:
        """Check the fields once all overrides are applied; raise ConfigError when invalid.

        Subclasses that override this should call ``super().validate()``.
        """
        if self.max_epochs < 0:
            raise ConfigError(f"max_epochs must be >= 0, not {self.max_epochs}")
        if self.different_seeds < 0:
            raise ConfigError(f"different_seeds must be >= 0, not {self.different_seeds}")
        if self.crossval_count < 0 or self.crossval_count == 1:
            raise ConfigError(
                f"crossval_count must be 0 (no cross-validation) or at least 2 folds, not "
                f"{self.crossval_count}"
            )
        if self.crossval_count == 0 and self.crossval_index != 0:
            raise ConfigError(
                f"crossval_index={self.crossval_index} needs crossval_count, the number of folds "
                "(at least 2)"
            )
        if self.crossval_count > 1 and not 0 <= self.crossval_index < self.crossval_count:
            raise ConfigError(
                f"crossval_index={self.crossval_index} must be in 0..crossval_count-1 "
                f"(crossval_count={self.crossval_count})"
            )
        if self.different_seeds > 0 and self.crossval_count > 1:
            raise ConfigError(
                "different_seeds and crossval_count cannot be combined in one command (as in "
                "the reference runner): list seeds and crossval.folds in a manifest, which runs "
                "every (seed, fold)"
            )
        if self.resume_training and self.run_inference_only:
            raise ConfigError("resume_training and run_inference_only exclude each other")
        if self.dataset_mountpoints and len(self.dataset_mountpoints) != len(self.azure_datasets):
            raise ConfigError(
                f"dataset_mountpoints has {len(self.dataset_mountpoints)} entries and "
                f"azure_datasets {len(self.azure_datasets)}: give one mount point per Azure "
                "dataset, or none"
            )
        problems = []
        for option in trainer_options():
            try:
                setattr(self, option, check_trainer_value(option, getattr(self, option, None)))
            except ValueError as exc:
                problems.append(f"{option}: {exc}")
        if problems:
            raise ConfigError("; ".join(problems))

    # --- conveniences ----------------------------------------------------------------------------

    @property
    def is_crossvalidation_enabled(self) -> bool:
        """Whether this run trains one fold of a cross-validation (``crossval_count`` > 1)."""
        return self.crossval_count > 1

    def get_effective_random_seed(self) -> int:
        """The seed the run is seeded with: :attr:`random_seed`, and with cross-validation
        ``random_seed + crossval_index + 1`` (the reference's rule: each fold starts from its
        own random state, and fold 0 from another than the run without folds)."""
        if self.is_crossvalidation_enabled:
            return self.random_seed + self.crossval_index + 1
        return self.random_seed

    @property
    def local_dataset(self) -> Path | None:
        """The first of :attr:`local_datasets`, or None."""
        return self.local_datasets[0] if self.local_datasets else None

    @property
    def outputs_folder(self) -> Path:
        """The run folder (also the working directory while the runner trains)."""
        if self._outputs_folder is None:
            return Path.cwd()
        return self._outputs_folder

    @property
    def effective_experiment(self) -> str:
        """The experiment name runs are recorded under: ``$HIML_EXPERIMENT_NAME``, else
        :attr:`experiment`, else the class name, made safe for the store (``a/b`` -> ``a_b``)."""
        from himl_manifest.records import experiment_name

        chosen = os.environ.get(EXPERIMENT_ENV) or self.experiment
        return experiment_name(chosen, type(self).__name__)
