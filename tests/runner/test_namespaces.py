"""Containers written against `pytorch_lightning` or `lightning.pytorch` get that Trainer."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from runner_helpers import FAST, run_flags

from himl_manifest.runner.trainer import lightning_namespace

LIGHTNING_CONTAINER = """
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from torch.utils.data import DataLoader
from himl_manifest import LightningContainer
from himl_manifest.configs.hello_world import HelloDataModule

class TinyData(LightningDataModule):
    def train_dataloader(self):
        return DataLoader(HelloDataModule().train, batch_size=5)

class Tiny(LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

class NewStyle(LightningContainer):
    def create_model(self):
        return Tiny()

    def get_data_module(self):
        return TinyData()
"""


def test_pytorch_lightning_models_use_pytorch_lightning() -> None:
    from himl_manifest.configs.hello_world import HelloRegression

    assert lightning_namespace(HelloRegression()).__name__ == "pytorch_lightning"


@pytest.mark.skipif(
    importlib.util.find_spec("lightning") is None, reason="the lightning package is not installed"
)
def test_lightning_pytorch_models_use_lightning_pytorch(
    project: Path, package: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HIML_TRACKING", "off")
    package("ns_new", {"models.py": LIGHTNING_CONTAINER})
    (result,) = run_flags("--model=ns_new.NewStyle", "--max_epochs=1", *FAST)
    assert (result.output_dir / "checkpoints" / "last.ckpt").is_file()
    assert "loss" in result.metrics
