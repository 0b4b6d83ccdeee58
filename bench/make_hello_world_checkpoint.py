"""Make the pretrained HelloWorld checkpoint that ships with the package, and its test MSE.

Trains HelloWorld with `himl-runner` (a real subprocess, CPU, seed 42, 20 epochs, deterministic
algorithms, tracking off) in a temporary project, keeps the weights, optimizer and loop state of
its ``last.ckpt`` (plain tensors, numbers and strings, so it loads with
``torch.load(..., weights_only=True)``; the callbacks' state, which holds this machine's paths,
is left out), then runs inference on the kept file (``--run_inference_only``) and checks it
reproduces the training run's test metrics exactly. Writes, under
``src/himl_manifest/configs/``:

- ``hello_world.ckpt``: the checkpoint (a few KB);
- ``hello_world_checkpoint.json``: its sha256, test MSE and MAE, and how it was made.

    python bench/make_hello_world_checkpoint.py           # rewrite both files
    python bench/make_hello_world_checkpoint.py --check   # only check the shipped files reproduce
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "himl_manifest" / "configs"
CHECKPOINT = CONFIGS / "hello_world.ckpt"
METRICS = CONFIGS / "hello_world_checkpoint.json"
#: The training run's flags (HelloWorld's defaults otherwise: 20 epochs, learning rate 0.1).
TRAIN_FLAGS = (
    "--model=HelloWorld",
    "--random_seed=42",
    "--accelerator=cpu",
    "--devices=1",
    "--deterministic=true",
    "--tracking_uri=none",
)
#: What the shipped file keeps of a Lightning checkpoint.
KEEP = (
    "epoch",
    "global_step",
    "pytorch-lightning_version",
    "state_dict",
    "loops",
    "optimizer_states",
    "lr_schedulers",
)


def runner(project: Path, *flags: str) -> dict[str, Any]:
    """`himl-runner` with ``flags`` in ``project``; its result (folder, metrics)."""
    result_file = project / "result.json"
    env = {**os.environ, "HIML_RESULT_FILE": str(result_file), "CUDA_VISIBLE_DEVICES": ""}
    subprocess.run(
        [sys.executable, "-m", "himl_manifest.runner.cli", *flags], cwd=project, env=env, check=True
    )
    result: dict[str, Any] = json.loads(result_file.read_text(encoding="utf-8"))
    result_file.unlink()
    return result


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def inference(checkpoint: Path, project: Path) -> dict[str, float]:
    flags = (*TRAIN_FLAGS, "--run_inference_only", f"--src_checkpoint={checkpoint}")
    metrics: dict[str, float] = runner(project, *flags)["metrics"]
    return metrics


def make(project: Path) -> dict[str, Any]:
    import pytorch_lightning
    import torch

    trained = runner(project, *TRAIN_FLAGS)
    full = torch.load(Path(trained["output_dir"]) / "checkpoints" / "last.ckpt", map_location="cpu")
    torch.save({key: full[key] for key in KEEP if key in full}, CHECKPOINT)
    torch.load(CHECKPOINT, weights_only=True)  # loads without unpickling code
    inferred = inference(CHECKPOINT, project)
    for name in ("test_mse", "test_mae"):
        if inferred[name] != trained["metrics"][name]:
            raise SystemExit(f"inference {name}={inferred[name]!r}, training {trained['metrics']}")
    record = {
        "checkpoint": CHECKPOINT.name,
        "sha256": sha256(CHECKPOINT),
        "test_mse": inferred["test_mse"],
        "test_mae": inferred["test_mae"],
        "made_by": "python bench/make_hello_world_checkpoint.py",
        "flags": list(TRAIN_FLAGS),
        "torch": torch.__version__,
        "pytorch_lightning": pytorch_lightning.__version__,
    }
    METRICS.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return record


def check(project: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(METRICS.read_text(encoding="utf-8"))
    if sha256(CHECKPOINT) != record["sha256"]:
        raise SystemExit(f"{CHECKPOINT} does not match the sha256 in {METRICS}")
    inferred = inference(CHECKPOINT, project)
    if inferred["test_mse"] != record["test_mse"]:
        raise SystemExit(f"inference test_mse={inferred['test_mse']!r}, recorded {record}")
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Check the shipped files only.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        project = Path(folder)
        (project / ".git").mkdir()
        record = check(project) if args.check else make(project)
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
