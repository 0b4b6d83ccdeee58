"""Runner overhead: `himl-runner --model=HelloWorld` vs a plain Lightning script doing the same.

Both train the same HelloWorld model on the same data for the same epochs, record the run in
the same kind of MLflow SQLite store (the plain script with Lightning's MLFlowLogger), and save
a last checkpoint. Each repetition is a fresh process, alternating the two, after one warm-up
of each (not counted; it also creates the store's tables). Prints a Markdown table of median
wall seconds per run and the difference (target: under 0.5 s).

    python bench/bench_runner.py [--reps 5] [--epochs 20]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PLAIN_SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, MLFlowLogger
    from himl_manifest.configs.hello_world import HelloDataModule, HelloRegression

    warnings.filterwarnings("ignore")
    epochs, uri, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    pl.seed_everything(42, workers=True, verbose=False)
    model, data = HelloRegression(), HelloDataModule()
    trainer = pl.Trainer(
        max_epochs=epochs,
        default_root_dir=out,
        logger=[
            CSVLogger(save_dir=out, name="", version=""),
            MLFlowLogger(experiment_name="HelloWorldPlain", tracking_uri=uri),
        ],
        callbacks=[ModelCheckpoint(dirpath=out + "/checkpoints", save_last=True, save_top_k=0)],
        enable_progress_bar=False,
    )
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    """
)


def _timed(command: list[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True, env=os.environ.copy())
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="himl-bench-") as tmp:
        root = Path(tmp)
        (root / ".git").mkdir()
        script = root / "plain.py"
        script.write_text(PLAIN_SCRIPT, encoding="utf-8")
        uri = f"sqlite:///{root / 'mlflow.db'}"
        runner = [
            sys.executable, "-m", "himl_manifest.runner.cli", "--model=HelloWorld",
            f"--max_epochs={args.epochs}", f"--tracking_uri={uri}",
        ]  # fmt: skip
        times: dict[str, list[tuple[float, float]]] = {"plain Lightning": [], "himl-runner": []}

        def plain(rep: int) -> list[str]:
            out = str(root / "plain" / str(rep))
            return [sys.executable, str(script), str(args.epochs), uri, out]

        _timed(plain(-1), root)  # warm-up: creates the store, fills OS caches
        _timed(runner, root)
        for rep in range(args.reps):
            times["plain Lightning"].append(_timed(plain(rep), root))
            times["himl-runner"].append(_timed(runner, root))
    _report(times, args.epochs, args.reps)


def _report(times: dict[str, list[tuple[float, float]]], epochs: int, reps: int) -> None:
    wall = {name: statistics.median(w for w, _ in values) for name, values in times.items()}
    cpu = {name: statistics.median(c for _, c in values) for name, values in times.items()}
    print(f"HelloWorld, {epochs} epochs, MLflow SQLite store, {reps} fresh processes each\n")
    print("| how | median wall (s) | min wall (s) | max wall (s) | median CPU (s) |")
    print("|---|---:|---:|---:|---:|")
    for name, values in times.items():
        walls = [w for w, _ in values]
        print(
            f"| {name} | {wall[name]:.2f} | {min(walls):.2f} | {max(walls):.2f} | {cpu[name]:.2f} |"
        )
    print(
        f"| **runner - plain** | **{wall['himl-runner'] - wall['plain Lightning']:+.2f}** | "
        f"| | **{cpu['himl-runner'] - cpu['plain Lightning']:+.2f}** |"
    )
    print("\ntarget: runner overhead under 0.5 s per run")


if __name__ == "__main__":
    main()
