"""The Lightning Trainer of a run: its arguments, checkpoint callbacks and loggers.

The Trainer, callbacks and loggers come from the namespace the user's model is written against:
``lightning.pytorch`` when the model subclasses ``lightning.pytorch.LightningModule``, else
``pytorch_lightning``.

Every run gets ``checkpoints/last.ckpt`` (each epoch), ``checkpoints/best_val_loss.ckpt``
(whenever ``val_loss`` is logged), ``metrics.csv`` (Lightning's CSVLogger, readable without any
server), and its metrics in the run store through a buffered :class:`TrackerLogger`.

Checkpoints are written atomically (:func:`_atomic_checkpoint`: a temporary file in the same
folder, flushed, then renamed over the old one), so a process killed while saving leaves the
previous checkpoint whole. A restarted run keeps the metrics of its earlier starts: the
``metrics.csv`` already in the folder is renamed ``metrics-<n>.csv`` (1, 2, ... in order of the
starts) before the new start writes its own ``metrics.csv``.
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from himl_manifest.runner.container import LightningContainer, trainer_options
from himl_manifest.runner.outputs import is_rank_zero
from himl_manifest.runner.tracking import Tracker

BEST_NAME = "best_val_loss"
BEST_MONITOR = "val_loss"
#: Metrics reach the store at most every this many seconds (and at the end), in one write.
_FLUSH_SECONDS = 10.0
_FLUSH_ITEMS = 500


def lightning_namespace(model: object) -> ModuleType:
    """``lightning.pytorch`` for models built on it, else ``pytorch_lightning``."""
    for klass in type(model).__mro__:
        module = klass.__module__ or ""
        if module == "lightning" or module.startswith("lightning."):
            return importlib.import_module("lightning.pytorch")
        if module.startswith("pytorch_lightning"):
            return importlib.import_module("pytorch_lightning")
    try:
        return importlib.import_module("pytorch_lightning")
    except ImportError:
        return importlib.import_module("lightning.pytorch")


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch, and the dataloader workers (Lightning's seed_everything)."""
    try:
        module = importlib.import_module("lightning_fabric.utilities.seed")
    except ImportError:
        module = importlib.import_module("lightning.fabric.utilities.seed")
    module.seed_everything(seed, workers=True, verbose=False)


def overrides_hook(model: object, namespace: ModuleType, name: str) -> bool:
    """True when the model defines ``name`` itself (e.g. ``test_step``)."""
    base = getattr(namespace.LightningModule, name, None)
    return getattr(type(model), name, None) not in (None, base)


LAST_NAME = "last"
METRICS_FILE = "metrics.csv"


def _atomic_checkpoint(namespace: ModuleType, tracker: Tracker | None = None) -> Any:
    """``ModelCheckpoint`` whose files are replaced atomically.

    Lightning saves through fsspec, which writes to a temporary file in the system temporary
    folder and moves it into place: across file systems that move is a copy, and a kill during
    it leaves a truncated checkpoint. Here the file is saved under a temporary name beside its
    target, flushed to disk, then renamed over it (``os.replace``); then ``tracker`` records it
    in the run store (:meth:`~himl_manifest.runner.tracking.Tracker.checkpoint_saved`)."""
    base = namespace.callbacks.ModelCheckpoint

    class AtomicCheckpoint(base):  # type: ignore[misc,valid-type]
        def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
            target = Path(filepath)
            partial = target.with_name(f".{target.name}.partial")
            super()._save_checkpoint(trainer, str(partial))
            if trainer.is_global_zero and partial.exists():
                with open(partial, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(partial, target)
                if tracker is not None:
                    tracker.checkpoint_saved(target)
            trainer.strategy.barrier()
            self._last_checkpoint_saved = filepath

    return AtomicCheckpoint


def _last_checkpoint(namespace: ModuleType, folder: Path, tracker: Tracker | None = None) -> Any:
    """``checkpoints/last.ckpt``, replaced at the end of every training epoch.

    Lightning's ``ModelCheckpoint(save_last=True, save_top_k=0)`` writes ``last.ckpt`` only
    after a top-k save of the same step, so with no top-k it wrote it once, when training ended:
    here it is written at the end of each training epoch (after its validation), always under
    the one name ``last.ckpt`` (no ``last-v1.ckpt`` beside an existing one)."""
    base = _atomic_checkpoint(namespace, tracker)

    class LastEveryEpoch(base):  # type: ignore[misc,valid-type]
        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if not self._should_skip_saving_checkpoint(trainer):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            pass  # saved at the end of the training epoch, which follows its validation

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            # once more when training ends: the fit loop then counts the last epoch completed
            if not trainer.sanity_checking and not getattr(trainer, "fast_dev_run", False):
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    return LastEveryEpoch(
        dirpath=folder, save_last=True, save_top_k=0, enable_version_counter=False
    )


def keep_previous_metrics(outputs: Path) -> Path | None:
    """Rename the ``metrics.csv`` of an earlier start of this run to ``metrics-<n>.csv`` (the
    CSV logger would delete it); the new name, or None when there was none."""
    current = outputs / METRICS_FILE
    if not current.is_file():
        return None
    number = 1
    while (outputs / f"metrics-{number}.csv").exists():
        number += 1
    kept = outputs / f"metrics-{number}.csv"
    os.replace(current, kept)
    return kept


def _best_checkpoint(namespace: ModuleType, folder: Path, tracker: Tracker | None = None) -> Any:
    base = _atomic_checkpoint(namespace, tracker)

    class BestValLoss(base):  # type: ignore[misc,valid-type]
        """ModelCheckpoint of the lowest ``val_loss``; silent while no ``val_loss`` is logged."""

        def _monitored(self, trainer: Any) -> bool:
            return self.monitor in trainer.callback_metrics

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if self._monitored(trainer):
                super().on_train_epoch_end(trainer, pl_module)

        def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
            if self._monitored(trainer):
                super().on_validation_end(trainer, pl_module)

    return BestValLoss(
        dirpath=folder,
        filename=BEST_NAME,
        monitor=BEST_MONITOR,
        mode="min",
        save_top_k=1,
        enable_version_counter=False,
        auto_insert_metric_name=False,
    )


def _tracker_logger(namespace: ModuleType, tracker: Tracker) -> Any:
    base = namespace.loggers.Logger

    class TrackerLogger(base):  # type: ignore[misc,valid-type]
        """Forwards Lightning's logged metrics to the run store, in batches."""

        def __init__(self) -> None:
            super().__init__()
            self._buffer: list[tuple[dict[str, float], int]] = []
            self._last_flush = time.monotonic()

        @property
        def name(self) -> str:
            return "himl"

        @property
        def version(self) -> str:
            return str(tracker.run_id or "")

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            pass  # the runner records the container's fields itself

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            scalars = {k: float(v) for k, v in metrics.items() if _is_scalar(v)}
            self._buffer.append((scalars, int(step or 0)))
            due = time.monotonic() - self._last_flush > _FLUSH_SECONDS
            if due or len(self._buffer) >= _FLUSH_ITEMS:
                self.flush()

        def flush(self) -> None:
            buffered, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
            if buffered:
                tracker.log_metrics(buffered)

        def save(self) -> None:
            pass

        def finalize(self, status: str) -> None:
            self.flush()

    return TrackerLogger()


def _is_scalar(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    numel = getattr(value, "numel", None)
    return callable(numel) and numel() == 1


def trainer_arguments(
    container: LightningContainer, namespace: ModuleType, outputs: Path, tracker: Tracker
) -> dict[str, Any]:
    """Keyword arguments of ``Trainer(...)``: the container's field of every trainer option
    (:func:`~himl_manifest.runner.container.trainer_options`) that is set, the runner's own
    callbacks and loggers, then ``container.get_trainer_arguments()`` (which wins)."""
    kwargs: dict[str, Any] = {}
    for name in trainer_options():  # a field left at None leaves Lightning's own default
        value = getattr(container, name)
        if value is not None:
            kwargs[name] = value
    checkpoints = outputs / "checkpoints"
    callbacks = [
        _last_checkpoint(namespace, checkpoints, tracker),
        _best_checkpoint(namespace, checkpoints, tracker),
        *container.get_callbacks(),
    ]
    if is_rank_zero():
        keep_previous_metrics(outputs)
    loggers = [
        namespace.loggers.CSVLogger(save_dir=outputs, name="", version=""),
        _tracker_logger(namespace, tracker),
    ]
    kwargs.update(
        default_root_dir=outputs,
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=sys.stderr.isatty(),
    )
    extra = dict(container.get_trainer_arguments())
    kwargs["callbacks"] = callbacks + list(extra.pop("callbacks", []) or [])
    kwargs.update(extra)
    return kwargs


def create_trainer(
    container: LightningContainer,
    namespace: ModuleType,
    outputs: Path,
    tracker: Tracker,
    num_nodes: int = 1,
) -> Any:
    kwargs = trainer_arguments(container, namespace, outputs, tracker)
    kwargs.setdefault("num_nodes", num_nodes)
    return namespace.Trainer(**kwargs)


def flush_loggers(trainer: Any) -> None:
    for logger in getattr(trainer, "loggers", []):
        flush = getattr(logger, "flush", None)
        if callable(flush):
            flush()
