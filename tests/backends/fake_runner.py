"""A stand-in for `himl run` that keeps its contract with the local backend, without training.

Usage: ``python fake_runner.py SPEC_FILE OUTPUT_DIR``. It logs into the pre-created MLflow run
named by ``MLFLOW_RUN_ID`` and behaves as the run spec's ``params`` say:

- ``behaviour: ok`` (default): a checkpoint, exit 0, the run left for the backend to end
  (importing MLflow costs seconds per process: most tests do without);
- ``behaviour: mlflow``: RUNNING, a checkpoint and a metric, FINISHED, all through MLflow;
- ``behaviour: fail``: marks the run FAILED itself, with an error tail, and exits 1;
- ``behaviour: fail_once``: as ``fail`` on the run's first attempt, as ``mlflow`` after;
- ``behaviour: crash``: prints a traceback and exits 3 without touching the run;
- ``sleep: S``: sleeps S seconds while RUNNING.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    output_dir = Path(sys.argv[2])
    params = spec["spec"].get("params", {})
    behaviour = params.get("behaviour", "ok")
    if behaviour == "crash":
        print("Traceback (most recent call last):\nRuntimeError: boom in training_step")
        return 3
    if behaviour == "ok":
        time.sleep(float(params.get("sleep", 0)))
        (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (output_dir / "checkpoints" / "last.ckpt").write_text("weights")
        return 0
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run_id = os.environ["MLFLOW_RUN_ID"]
    if behaviour == "fail_once":
        first = client.get_run(run_id).data.tags.get("himl.attempt", "1") == "1"
        behaviour = "fail" if first else "mlflow"
    client.update_run(run_id, status="RUNNING")
    time.sleep(float(params.get("sleep", 0)))
    (output_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (output_dir / "checkpoints" / "last.ckpt").write_text("weights")
    client.log_metric(run_id, "val_loss", 0.25)
    if behaviour == "fail":
        client.set_tag(run_id, "himl.error_tail", "ValueError: the runner marked it failed")
        client.set_terminated(run_id, status="FAILED")
        return 1
    client.set_terminated(run_id, status="FINISHED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
