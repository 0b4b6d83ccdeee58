"""The one code path of every run: `himl-runner` flags and `himl run` specs both end here.

:func:`execute` builds the container (lookup, ``__init__``, model variant, overrides), then
either starts one child process per seed (``--different_seeds``) or per cross-validation fold
(``--crossval_count`` without ``--crossval_index``), or runs once:

1. choose the checkpoint (a restarted run's own newest checkpoint wins over ``src_checkpoint``)
   and check it fits the mode (resume: ``max_epochs`` above the checkpoint's epochs) - before
   anything is created;
2. create the run folder, its log, ``experiment_summary.txt`` and ``run_spec.json``; start the
   run record;
3. train and test, validate and test (inference), or test on the evaluation data (evaluation),
   inside the run folder;
4. end the run record FINISHED, or FAILED with the tail of the log.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import warnings
from pathlib import Path

from himl_manifest.errors import (
    CheckpointError,
    ConfigError,
    ContainerError,
    HimlError,
)
from himl_manifest.records import (
    CHECKPOINT_DIR,
    LOG_FILE,
    TAG_CONTAINER,
    TAG_MODE,
    TAG_PARENT_RUN,
    TAG_RUN_NAME,
    display_name,
    one_off_run_name,
    plain_tags,
)
from himl_manifest.runner import checkpoints, outputs, tracking
from himl_manifest.runner.container import LightningContainer, instantiate
from himl_manifest.runner.fields import apply_overrides, field_values
from himl_manifest.runner.lookup import find_container
from himl_manifest.runner.results import EVALUATE, RESUME, WEIGHTS, CheckpointChoice, RunResult
from himl_manifest.runner.settings import EVALUATION, INFERENCE, TRAIN, RunSettings
from himl_manifest.runner.sources import run_source_tags

logger = logging.getLogger(__name__)


def build_container(settings: RunSettings) -> LightningContainer:
    """Find the class, instantiate it, apply the variant then the overrides, validate."""
    cls = find_container(settings.model)
    container = instantiate(cls, settings.model_variant)
    apply_overrides(container, settings.overrides, source=settings.origin)
    try:
        container.validate()
    except HimlError:
        raise
    except Exception as exc:
        raise ContainerError(cls.__name__, "validate()", exc) from exc
    return container


def mode_of(settings: RunSettings, container: LightningContainer) -> str:
    if settings.mode == EVALUATION:
        return EVALUATION
    return INFERENCE if container.run_inference_only else TRAIN


def execute(settings: RunSettings) -> list[RunResult]:
    """Run what ``settings`` describe; the results of every run (several for a seed sweep).

    ``--debug_ddp`` sets ``TORCH_DISTRIBUTED_DEBUG`` for this run only (its DDP children inherit
    it): an earlier in-process run never leaks it into later ones."""
    debug = settings.debug_ddp.upper()
    with outputs.environment({"TORCH_DISTRIBUTED_DEBUG": debug} if debug != "OFF" else {}):
        return _execute(settings)


def _execute(settings: RunSettings) -> list[RunResult]:
    _quiet_known_warnings()
    try:
        container = build_container(settings)
        _check_available(settings, container)
    except Exception as exc:
        if outputs.is_rank_zero():
            uri = tracking.resolved_uri(settings.tracking_uri)
            tracking.fail_precreated(uri, f"{type(exc).__name__}: {exc}")
        raise
    if settings.cluster:
        from himl_manifest.runner.submit import submit_to_cluster

        return submit_to_cluster(settings, container)
    if container.different_seeds > 0:
        from himl_manifest.runner.seeds import run_seeds

        return run_seeds(settings, container)
    if runs_every_fold(settings, container):
        from himl_manifest.runner.seeds import run_folds

        return run_folds(settings, container)
    return [run_once(settings, container)]


def runs_every_fold(settings: RunSettings, container: LightningContainer) -> bool:
    """``--crossval_count=K`` without ``--crossval_index``: every fold, each its own run (a
    run spec always names its fold)."""
    return container.crossval_count > 1 and "crossval_index" not in settings.overrides


def _check_available(settings: RunSettings, container: LightningContainer) -> None:
    if container.different_seeds > 0 and not settings.argv:
        raise ConfigError("different_seeds works on the command line; list seeds in a manifest")
    if runs_every_fold(settings, container) and not settings.argv and not settings.cluster:
        raise ConfigError("crossval_count alone works on the command line; a run names its fold")
    if settings.num_nodes > 1 and not settings.cluster and not _in_cluster():
        raise ConfigError(
            f"num_nodes={settings.num_nodes} needs a cluster (it would wait for machines that "
            "are not there): a local run uses one machine; set num_nodes=1, or use --devices "
            "for several devices of this machine"
        )
    if container.log_from_vm and settings.cluster:
        raise ConfigError(
            "--log_from_vm logs a local run to the workspace; a job on --cluster is recorded "
            "there anyway: give one of them"
        )


#: Environment variables set where a run spans several machines (Azure ML, torchrun, SLURM).
_CLUSTER_ENV = ("MASTER_ADDR", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS")


def _in_cluster() -> bool:
    return _in_azureml() or any(os.environ.get(name) for name in _CLUSTER_ENV)


def _warn_unreadable_datasets(container: LightningContainer) -> None:
    """Warn about Azure datasets a local run cannot read (no ``local_datasets`` entry)."""
    if _in_azureml():
        return
    for index, name in enumerate(container.azure_datasets):
        if index >= len(container.local_datasets):
            logger.warning(
                "Azure dataset %r has no local copy (--local_datasets): this local run does "
                "not download it, so the container must not need it",
                name,
            )


def link_mountpoints(container: LightningContainer, *, in_job: bool | None = None) -> None:
    """Inside an Azure ML job, make each dataset's ``mountpoint`` lead to where the service
    put it (``local_datasets[i]``, from ``--input dataset_<i>=PATH``): a symlink, so code that
    reads ``/mnt/panda`` finds it. The job's inputs do not name the mountpoint (azure-ai-ml's
    own checks refuse ``path_on_compute`` for a job built in code). Every process of a node
    may try: a link that is there already and leads to the same folder is fine; anything else
    at the mountpoint is an error that says what is there."""
    if not (_in_azureml() if in_job is None else in_job):
        return
    for index, mountpoint in enumerate(container.dataset_mountpoints):
        if index >= len(container.local_datasets):
            break
        target = Path(container.local_datasets[index]).resolve()
        where = Path(mountpoint)
        if where.resolve() == target:
            continue
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            where.symlink_to(target, target_is_directory=True)
        except FileExistsError:
            if where.resolve() != target:
                raise ConfigError(
                    f"dataset {index}: its mountpoint {where} exists already and is not the "
                    f"dataset's folder {target}: choose another mountpoint"
                ) from None
        except OSError as exc:
            raise ConfigError(
                f"dataset {index}: cannot make its mountpoint {where} (lead to {target}): {exc}"
            ) from exc
        logger.info("dataset %d: %s -> %s", index, where, target)


def users_error(
    exc: BaseException, container: LightningContainer, log_file: Path | None
) -> ContainerError | None:
    """A :class:`ContainerError` for an exception of the user's code (its model, data or
    hooks, and what Lightning or torch raise for them); None for the runner's own errors."""
    if not isinstance(exc, Exception) or isinstance(exc, HimlError):
        return None
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames or _runner_file(frames[-1].filename):
        return None
    user = [f for f in frames if not _library_file(f.filename)]
    where = f"{user[-1].name} ({Path(user[-1].filename).name}:{user[-1].lineno})" if user else ""
    note = f"traceback in {log_file}" if log_file is not None and log_file.is_file() else ""
    return ContainerError(type(container).__name__, where or "the run", exc, note)


_PACKAGE = Path(__file__).resolve().parents[1]


def _runner_file(filename: str) -> bool:
    """True for this package's own code (the runner, backends...), not its example configs."""
    path = Path(filename).resolve()
    return path.is_relative_to(_PACKAGE) and not path.is_relative_to(_PACKAGE / "configs")


def _library_file(filename: str) -> bool:
    path = Path(filename).resolve()
    return _runner_file(filename) or any(
        part in ("site-packages", "dist-packages") or part.startswith("python3.")
        for part in path.parts
    )


def _quiet_known_warnings() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    warnings.filterwarnings("ignore", ".*Experiment logs directory .* exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*The dirpath has changed from.*")


def _folder_run_name(settings: RunSettings, container: LightningContainer) -> str:
    return settings.run_name or type(container).__name__


def _known_folder(settings: RunSettings) -> Path | None:
    """The run folder when it is known before it is created (else a fresh one is made)."""
    shared = os.environ.get(outputs.RUN_DIR_ENV)
    if shared and not outputs.is_rank_zero():
        return Path(shared)
    if settings.output_dir is not None:
        return settings.output_dir.resolve()
    return outputs.azureml_folders().outputs if outputs.is_rank_zero() and _in_azureml() else None


def _in_azureml() -> bool:
    from himl_manifest.paths import in_azureml

    return in_azureml()


def choose_checkpoint(
    container: LightningContainer, mode: str, folder: Path | None, uri: str | None
) -> CheckpointChoice:
    """The checkpoint this run starts from, and how it uses it (checked before any work)."""
    inherited = os.environ.get(outputs.CHECKPOINT_ENV) if outputs.is_ddp_child() else None
    if mode == TRAIN and folder is not None and not inherited:
        recovered = checkpoints.recovery_checkpoint(folder / CHECKPOINT_DIR)
        if recovered is not None:
            return CheckpointChoice(recovered, RESUME, recovered=True, trusted=True)
    source = container.src_checkpoint
    if not source:
        if mode != TRAIN or container.resume_training:
            what = "--run_inference_only" if mode == INFERENCE else f"mode {mode}"
            what = "--resume_training" if mode == TRAIN else what
            raise CheckpointError(f"{what} needs a checkpoint: set --src_checkpoint")
        return CheckpointChoice()
    continues: list[str] = []

    def resolve_run(reference: str) -> Path:
        path, run_id = tracking.resolve_run_checkpoint(reference, uri or _store_uri())
        continues.append(run_id)
        return path

    if inherited:
        path = Path(inherited)
    else:
        path = checkpoints.resolve_source(
            source, sha256=container.src_checkpoint_sha256, resolve_run=resolve_run
        )
    use = EVALUATE if mode != TRAIN else (RESUME if container.resume_training else WEIGHTS)
    trusted = checkpoints.is_trusted(source, marked=container.src_checkpoint_trusted)
    if use == RESUME and not inherited:
        done = checkpoints.epochs_done(checkpoints.load(path, trusted=trusted))
        if container.max_epochs <= done:
            raise ConfigError(
                f"cannot resume: checkpoint {path} has completed {done} epochs, and max_epochs is "
                f"{container.max_epochs}; set max_epochs above {done} to train further"
            )
    return CheckpointChoice(path, use, trusted=trusted, continues=next(iter(continues), None))


def _store_uri() -> str:
    from himl_manifest.paths import tracking_uri

    return tracking_uri()


def run_once(settings: RunSettings, container: LightningContainer) -> RunResult:
    """One run, start to end; errors propagate after the run record is marked FAILED."""
    started = time.monotonic()
    rank0 = outputs.is_rank_zero()
    uri = tracking.resolved_uri(settings.tracking_uri) if rank0 else None
    mode = mode_of(settings, container)
    try:
        vm_uri = tracking.log_from_vm_uri() if rank0 and container.log_from_vm else None
        choice = choose_checkpoint(container, mode, _known_folder(settings), uri)
    except Exception as exc:
        if rank0:
            tracking.fail_precreated(uri, f"{type(exc).__name__}: {exc}")
        raise
    explicit = settings.output_dir
    folders = outputs.make_run_folders(_folder_run_name(settings, container), explicit)
    container._outputs_folder = folders.outputs
    log_file = folders.logs / LOG_FILE if rank0 else None
    with outputs.run_log(log_file, settings.log_level):
        logger.info("run folder: %s", folders.outputs)
        if choice.recovered:
            logger.info("restarted run: resuming from its own checkpoint %s", choice.path)
        elif choice.path is not None:
            logger.info("checkpoint: %s (%s)", choice.path, choice.use)
        _warn_unreadable_datasets(container)
        tracker: tracking.Tracker = tracking.NullTracker()
        try:
            if rank0:
                _write_records(settings, container, mode, choice, folders.outputs)
                tracker = _start_tracking(
                    settings, container, mode, folders.outputs, uri, vm_uri, choice
                )
            link_mountpoints(container)
            metrics = _run_in_folder(settings, container, mode, choice, folders, tracker)
        except BaseException as exc:
            logger.exception("run failed: %s", exc)
            status = "KILLED" if _is_interruption(exc) else "FAILED"
            tail = outputs.log_tail(log_file)
            try:
                tracking.record_checkpoints(tracker, folders.outputs)
            except Exception as store_exc:
                logger.warning("could not record the checkpoints: %s", store_exc)
            try:
                tracker.finish(status, tail or f"{type(exc).__name__}: {exc}")
            except Exception as store_exc:
                logger.warning("could not record the failure: %s", store_exc)
            if rank0 and isinstance(tracker, tracking.NullTracker):
                tracking.fail_precreated(uri, tail or str(exc))
            users = users_error(exc, container, log_file)
            if users is not None:
                raise users from exc
            raise
        tracking.record_checkpoints(tracker, folders.outputs)
        tracker.finish("FINISHED")
        logger.info("run finished in %.1f s", time.monotonic() - started)
    return RunResult(
        output_dir=folders.outputs,
        mode=mode,
        run_id=tracker.run_id,
        metrics=metrics,
        checkpoint=str(choice.path) if choice.path else None,
        seconds=time.monotonic() - started,
        label=container.tag or type(container).__name__,
    )


def _write_records(
    settings: RunSettings,
    container: LightningContainer,
    mode: str,
    choice: CheckpointChoice,
    folder: Path,
) -> None:
    values = field_values(container)
    header = {
        "container": f"{type(container).__module__}.{type(container).__qualname__}",
        "mode": mode,
        "model_variant": settings.model_variant or "",
        "checkpoint": f"{choice.path} ({choice.use})" if choice.path else "",
        "run_name": settings.run_name or "",
    }
    outputs.write_summary(folder, values, header)
    resolved = {**header, "fields": values, "num_nodes": settings.num_nodes}
    outputs.write_run_spec(folder, {**settings.source, "resolved": resolved})


def run_display_name(settings: RunSettings, container: LightningContainer) -> str:
    """The display name of a run the runner creates, by the one rule of
    :func:`~himl_manifest.records.display_name`: ``--tag`` (a spec's display name),
    else the run name (a one-off run's: ``<experiment>-s<seed>``, and ``-f<fold>`` after it
    for a cross-validation fold)."""
    run_name = settings.run_name
    if not run_name:
        run_name = one_off_run_name(container.effective_experiment, container.random_seed)
        if container.is_crossvalidation_enabled:
            run_name += f"-f{container.crossval_index}"
    return display_name(run_name, container.tag or None)


def _start_tracking(
    settings: RunSettings,
    container: LightningContainer,
    mode: str,
    folder: Path,
    uri: str | None,
    vm_uri: str | None = None,
    choice: CheckpointChoice | None = None,
) -> tracking.Tracker:
    command = f"himl-runner --model={settings.model}"
    tags = {
        **run_source_tags(settings.source, command),
        TAG_CONTAINER: f"{type(container).__module__}.{type(container).__qualname__}",
        TAG_MODE: mode,
        **settings.tags,
        **plain_tags(container.get_additional_tags()),
    }
    if settings.run_name:
        tags[TAG_RUN_NAME] = settings.run_name
    resumed = choice is not None and choice.use == RESUME and not choice.recovered
    if resumed and choice is not None and choice.continues is not None:
        tags[TAG_PARENT_RUN] = choice.continues  # resumed from another run's checkpoint
    return tracking.start(
        uri,
        experiment=container.effective_experiment,
        name=run_display_name(settings, container),
        params=field_values(container),
        tags=tags,
        output_dir=folder,
        vm_uri=vm_uri,
    )


def _run_in_folder(
    settings: RunSettings,
    container: LightningContainer,
    mode: str,
    choice: CheckpointChoice,
    folders: outputs.RunFolders,
    tracker: tracking.Tracker,
) -> dict[str, float]:
    from himl_manifest.runner.train import run_lightning

    handover = {
        outputs.RUN_DIR_ENV: str(folders.outputs),
        outputs.LAUNCH_CWD_ENV: os.environ.get(outputs.LAUNCH_CWD_ENV, str(Path.cwd())),
        outputs.CHECKPOINT_ENV: str(choice.path or ""),
    }
    with outputs.environment(handover), outputs.working_directory(folders.outputs):
        return run_lightning(container, mode, choice, folders.outputs, tracker, settings.num_nodes)


def _is_interruption(exc: BaseException) -> bool:
    """Ctrl-C, or SIGTERM as Lightning raises it (a cancelled job): the run is cancelled."""
    return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "SIGTERMException"
