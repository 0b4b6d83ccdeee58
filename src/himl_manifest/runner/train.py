"""The Lightning part of a run: seed, model, data, Trainer, then fit/validate/test.

Called by :mod:`.execute` inside the run folder (the working directory). Imports torch and
Lightning.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

from himl_manifest.errors import CheckpointError
from himl_manifest.runner import checkpoints
from himl_manifest.runner.container import LightningContainer
from himl_manifest.runner.settings import EVALUATION, INFERENCE, TRAIN
from himl_manifest.runner.tracking import Tracker
from himl_manifest.runner.trainer import (
    create_trainer,
    flush_loggers,
    lightning_namespace,
    overrides_hook,
    seed_everything,
)

if TYPE_CHECKING:
    from himl_manifest.runner.results import CheckpointChoice

logger = logging.getLogger(__name__)


def _load_weights(model: Any, path: Path, trusted: bool) -> None:
    state = checkpoints.load(path, trusted=trusted).get("state_dict")
    if state is None:
        raise CheckpointError(f"{path} holds no state_dict: not a Lightning checkpoint")
    model.load_state_dict(state)
    logger.info("loaded the weights of %s", path)


def _scalars(metrics: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def run_lightning(
    container: LightningContainer,
    mode: str,
    choice: CheckpointChoice,
    folder: Path,
    tracker: Tracker,
    num_nodes: int = 1,
) -> dict[str, float]:
    """Train/infer/evaluate as ``mode`` says; the final metrics (Lightning's callback metrics)."""
    seed_everything(container.get_effective_random_seed())
    model = container.create_model()
    namespace = lightning_namespace(model)
    data = container.get_eval_data_module() if mode == EVALUATION else container.get_data_module()
    trainer = create_trainer(container, namespace, folder, tracker, num_nodes)
    ckpt = str(choice.path) if choice.path is not None else None
    can_test = overrides_hook(model, namespace, "test_step")
    metrics: dict[str, float] = {}

    def stage(run: Any, **kwargs: Any) -> None:
        if kwargs.get("ckpt_path") is not None:
            # Lightning loads the checkpoint itself: by the same trust rule as ours.
            kwargs["weights_only"] = not choice.trusted
            try:
                with checkpoints.safe_globals():
                    run(model, datamodule=data, **kwargs)
            except pickle.UnpicklingError as exc:
                if choice.trusted:
                    raise
                raise checkpoints.untrusted_error(kwargs["ckpt_path"], exc) from exc
        else:
            run(model, datamodule=data, **kwargs)
        metrics.update(_scalars(dict(trainer.callback_metrics)))

    try:
        if mode == TRAIN:
            if choice.use == "weights" and choice.path is not None:
                _load_weights(model, choice.path, choice.trusted)
            stage(trainer.fit, ckpt_path=ckpt if choice.use == "resume" else None)
            if can_test:
                stage(trainer.test)
        else:
            if mode == INFERENCE and overrides_hook(model, namespace, "validation_step"):
                stage(trainer.validate, ckpt_path=ckpt)
            if can_test:
                stage(trainer.test, ckpt_path=ckpt)
        if not can_test:
            logger.info("%s defines no test_step: nothing tested", type(model).__name__)
    finally:
        flush_loggers(trainer)
    return metrics
