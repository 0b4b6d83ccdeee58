"""The Lightning Trainer of a run: its arguments, checkpoint callbacks and loggers.

The Trainer, callbacks and loggers come from the namespace the user's model is written against:
``lightning.pytorch`` when the model subclasses ``lightning.pytorch.LightningModule``, else
``pytorch_lightning``.

Every run gets ``checkpoints/last.ckpt`` (each epoch), ``checkpoints/best_val_loss.ckpt``
(whenever ``val_loss`` is logged), ``metrics.csv`` (Lightning's CSVLogger, readable without any
server), and its metrics in the run store through a buffered :class:`TrackerLogger`.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from himl_manifest.runner.container import LightningContainer, trainer_options
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


def _best_checkpoint(namespace: ModuleType, folder: Path) -> Any:
    base = namespace.callbacks.ModelCheckpoint

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
        namespace.callbacks.ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=0),
        _best_checkpoint(namespace, checkpoints),
        *container.get_callbacks(),
    ]
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
