"""HelloWorld: the built-in example container, a 1-D linear regression (``--model=HelloWorld``).

The data is ``hello_world.csv`` in this package: 200 points of y = 0.2·x + N(0, 0.1²), x uniform
in [0, 10), made once from a fixed data seed (see :mod:`.hello_world_data`) and therefore the
same whatever the training seed. The first 40 rows are the test set, the next 50 the validation
set, the last 110 the training set. With cross-validation (``crossval_count`` K > 1) the 160
rows after the test set are split into K contiguous folds: fold ``crossval_index`` is the
validation set, the other K-1 folds the training set; the test set stays the same.

One ``Linear(1, 1)``, MSE loss, Adam (lr 0.1) with a step schedule, batch size 5, 20 epochs:
a trained model reaches test MSE ≈ 0.0108 and MAE ≈ 0.083 (the noise floor is an MSE of 0.01).

Metrics: ``loss`` (training, per epoch), ``val_loss``, ``test_mse`` and ``test_mae``; the test
metrics are also written to ``test_mse.txt`` and ``test_mae.txt`` in the working directory,
which the runner makes the run folder.
"""

from __future__ import annotations

import csv
import io
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning import LightningDataModule, LightningModule
from torch.utils.data import DataLoader, TensorDataset

from himl_manifest.configs.hello_world_data import CSV_NAME
from himl_manifest.runner.container import LightningContainer

#: A HelloWorld model trained once (seed 42, CPU, 20 epochs) by
#: ``bench/make_hello_world_checkpoint.py``; its test MSE is recorded in
#: :data:`PRETRAINED_METRICS`, and ``--run_inference_only --src_checkpoint=<this file>``
#: reproduces it exactly. Plain tensors, numbers and strings: it loads with ``weights_only=True``.
PRETRAINED_CHECKPOINT = Path(__file__).resolve().with_name("hello_world.ckpt")
PRETRAINED_METRICS = PRETRAINED_CHECKPOINT.with_name("hello_world_checkpoint.json")

#: Rows of the CSV in each split, in file order.
N_TEST, N_VAL, N_TRAIN = 40, 50, 110
BATCH_SIZE = 5


def load_points(path: Path | None = None) -> torch.Tensor:
    """The (x, y) points as a float32 tensor of shape (N, 2): from ``path``, else the package."""
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
    else:
        text = resources.files(__package__).joinpath(CSV_NAME).read_text(encoding="utf-8")
    rows = [(float(r["x"]), float(r["y"])) for r in csv.DictReader(io.StringIO(text))]
    return torch.tensor(rows, dtype=torch.float32)


def fold_rows(n_rows: int, crossval_count: int, crossval_index: int) -> tuple[range, list[int]]:
    """K-fold split of ``n_rows`` rows (in file order: the points are already in random order):
    ``(validation rows, training rows)``. Fold ``i`` is the contiguous block
    ``[i*n//K, (i+1)*n//K)``; the K blocks cover every row exactly once."""
    if crossval_count < 2 or not 0 <= crossval_index < crossval_count:
        raise ValueError(f"fold {crossval_index} of {crossval_count}: not a cross-validation fold")
    start = crossval_index * n_rows // crossval_count
    stop = (crossval_index + 1) * n_rows // crossval_count
    return range(start, stop), [*range(start), *range(stop, n_rows)]


class HelloDataModule(LightningDataModule):
    """The CSV split into test (40), validation (50) and training (110) points; with
    ``crossval_count`` K > 1, the 160 non-test points split into K folds, fold
    ``crossval_index`` the validation set and the rest the training set."""

    def __init__(
        self,
        csv_path: Path | None = None,
        batch_size: int = BATCH_SIZE,
        crossval_count: int = 0,
        crossval_index: int = 0,
    ) -> None:
        super().__init__()
        points = load_points(csv_path)
        if crossval_count > 1:
            val_rows, train_rows = fold_rows(N_VAL + N_TRAIN, crossval_count, crossval_index)
        else:
            val_rows, train_rows = range(N_VAL), list(range(N_VAL, N_VAL + N_TRAIN))
        #: Rows of the CSV (0-based data rows) in each split, for inspection and tests.
        self.test_rows = list(range(N_TEST))
        self.val_rows = [N_TEST + row for row in val_rows]
        self.train_rows = [N_TEST + row for row in train_rows]
        self.test, self.val, self.train = (
            TensorDataset(points[rows, :1], points[rows, 1:])
            for rows in (self.test_rows, self.val_rows, self.train_rows)
        )
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.train, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.val, batch_size=self.batch_size)

    def test_dataloader(self) -> DataLoader[Any]:
        return DataLoader(self.test, batch_size=self.batch_size)


class HelloRegression(LightningModule):
    """y ≈ w·x + b, trained with MSE."""

    def __init__(self, learning_rate: float = 0.1) -> None:
        super().__init__()
        self.model = torch.nn.Linear(1, 1)
        self.learning_rate = learning_rate
        self._test_sums = torch.zeros(3)  # squared error, absolute error, count

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # type: ignore[no-any-return]

    def _loss(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        loss = self._loss(batch)
        self.log("loss", loss, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        loss = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, sync_dist=True)
        return loss

    def on_test_epoch_start(self) -> None:
        self._test_sums = torch.zeros(3, device=self.device)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> Any:
        x, y = batch
        error = (self(x) - y).float()  # float32 sums also under mixed precision
        count = error.new_tensor(float(len(y)))
        self._test_sums += torch.stack([error.pow(2).sum(), error.abs().sum(), count])

    def on_test_epoch_end(self) -> None:
        sums = self.all_gather(self._test_sums)
        assert isinstance(sums, torch.Tensor)
        total = sums.reshape(-1, 3).sum(dim=0)
        mse, mae = (total[0] / total[2]).item(), (total[1] / total[2]).item()
        # Every process holds the same totals, so averaging across processes changes nothing.
        self.log("test_mse", mse, sync_dist=True)
        self.log("test_mae", mae, sync_dist=True)
        if self.trainer.is_global_zero:
            Path("test_mse.txt").write_text(f"{mse}\n", encoding="utf-8")
            Path("test_mae.txt").write_text(f"{mae}\n", encoding="utf-8")

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(self.parameters(), lr=self.learning_rate)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5)
        return [optimizer], [scheduler]


class HelloWorld(LightningContainer):
    """The 1-D regression example: ``himl-runner --model=HelloWorld``."""

    learning_rate: float = 0.1

    def __init__(self) -> None:
        super().__init__()
        self.max_epochs = 20

    def create_model(self) -> LightningModule:
        return HelloRegression(learning_rate=self.learning_rate)

    def get_data_module(self) -> LightningDataModule:
        # Cross-validation: the data module splits by crossval_count / crossval_index.
        return HelloDataModule(
            csv_path=self.local_dataset,
            crossval_count=self.crossval_count,
            crossval_index=self.crossval_index,
        )
