"""GPU check: HelloWorld and a heavier synthetic MLP, through the runner and bare Lightning.

On a CUDA machine (tested against torch 2.11 and pytorch-lightning 2.6.6; MLflow is not
needed: the runner's tracking is turned off) it trains both models with ``bf16-mixed`` on one
GPU, once through ``himl_manifest``'s runner (``execute``, the code path of `himl-runner` and
`himl run`) and once through a bare ``Trainer``, and prints training throughput (samples per
second, first epoch excluded as warm-up) of each as a Markdown table.

    python bench/gpu_check.py            # CUDA, bf16-mixed
    python bench/gpu_check.py --cpu      # smoke test: CPU, 32-true, small sizes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

try:
    import himl_manifest  # noqa: F401
except ImportError:  # run from a checkout without installing it
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch
from pytorch_lightning import Callback, LightningDataModule, LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from himl_manifest.configs.hello_world import HelloDataModule, HelloRegression, HelloWorld
from himl_manifest.runner.container import LightningContainer
from himl_manifest.runner.execute import execute
from himl_manifest.runner.settings import RunSettings

#: samples/s per (model, path), filled in by the Throughput callbacks.
RESULTS: dict[tuple[str, str], float] = {}
SIZES = {"gpu": {"width": 4096, "depth": 6, "n": 131072, "batch": 1024, "epochs": 4}}
SIZES["cpu"] = {"width": 64, "depth": 2, "n": 4096, "batch": 256, "epochs": 3}
CONFIG: dict[str, Any] = {}


class Throughput(Callback):  # type: ignore[misc]
    """Training samples per second, from the second epoch on."""

    def __init__(self, key: tuple[str, str]) -> None:
        self.key, self.samples, self.started = key, 0, 0.0

    def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
        if trainer.current_epoch == 1:
            _sync()
            self.started, self.samples = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, *a: Any
    ) -> None:
        if trainer.current_epoch >= 1:
            self.samples += int(batch[0].shape[0])

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        _sync()
        RESULTS[self.key] = self.samples / max(time.perf_counter() - self.started, 1e-9)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class MLP(LightningModule):  # type: ignore[misc]
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        for _ in range(depth):
            layers += [torch.nn.Linear(width, width), torch.nn.GELU()]
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, 1))

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x).float(), y)
        self.log("loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


class RandomData(LightningDataModule):  # type: ignore[misc]
    def __init__(self, width: int, n: int, batch: int) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.data = TensorDataset(
            torch.randn(n, width, generator=generator), torch.randn(n, 1, generator=generator)
        )
        self.batch = batch

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(
            self.data, batch_size=self.batch, shuffle=True, pin_memory=torch.cuda.is_available()
        )


class Synthetic(LightningContainer):
    """The heavier model, run through the runner."""

    def create_model(self) -> LightningModule:
        return MLP(CONFIG["width"], CONFIG["depth"])

    def get_data_module(self) -> LightningDataModule:
        return RandomData(CONFIG["width"], CONFIG["n"], CONFIG["batch"])

    def get_callbacks(self) -> list[Any]:
        return [Throughput(("synthetic MLP", "himl runner"))]


class TimedHelloWorld(HelloWorld):
    def get_callbacks(self) -> list[Any]:
        return [Throughput(("HelloWorld", "himl runner"))]


def _through_runner(model: str, flags: dict[str, Any], folder: Path) -> float:
    started = time.perf_counter()
    settings = RunSettings(model=model, overrides=flags, tracking_uri="none", output_dir=folder)
    execute(settings)
    return time.perf_counter() - started


def _bare(name: str, model: Any, data: Any, flags: dict[str, Any], folder: Path) -> float:
    started = time.perf_counter()
    trainer = Trainer(
        accelerator=flags["accelerator"],
        devices=1,
        precision=flags["precision"],
        max_epochs=flags["max_epochs"],
        default_root_dir=folder,
        callbacks=[Throughput((name, "bare Lightning"))],
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="smoke test on the CPU")
    args = parser.parse_args()
    if not args.cpu and not torch.cuda.is_available():
        sys.exit("no CUDA device: use --cpu for a smoke test")
    CONFIG.update(SIZES["cpu" if args.cpu else "gpu"])
    accelerator, precision = ("cpu", "32-true") if args.cpu else ("gpu", "bf16-mixed")
    base = {"accelerator": accelerator, "devices": 1, "precision": precision}
    hello = {**base, "max_epochs": 20, "num_sanity_val_steps": 0}
    heavy = {**base, "max_epochs": CONFIG["epochs"]}
    walls: dict[tuple[str, str], float] = {}
    with tempfile.TemporaryDirectory(prefix="himl-gpu-check-") as tmp:
        root = Path(tmp)
        walls[("HelloWorld", "himl runner")] = _through_runner(
            "__main__.TimedHelloWorld", hello, root / "r1"
        )
        walls[("HelloWorld", "bare Lightning")] = _bare(
            "HelloWorld", HelloRegression(), HelloDataModule(), hello, root / "b1"
        )
        walls[("synthetic MLP", "himl runner")] = _through_runner(
            "__main__.Synthetic", heavy, root / "r2"
        )
        mlp, data = (
            MLP(CONFIG["width"], CONFIG["depth"]),
            RandomData(CONFIG["width"], CONFIG["n"], CONFIG["batch"]),
        )
        walls[("synthetic MLP", "bare Lightning")] = _bare(
            "synthetic MLP", mlp, data, heavy, root / "b2"
        )
    device = torch.cuda.get_device_name(0) if not args.cpu else "CPU"
    print(f"\ntorch {torch.__version__}, {device}, precision {precision}\n")
    print("| model | path | train samples/s | wall (s) |")
    print("|---|---|---:|---:|")
    for key, wall in walls.items():
        print(f"| {key[0]} | {key[1]} | {RESULTS.get(key, float('nan')):,.0f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
