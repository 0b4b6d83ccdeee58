"""Checkpoint trust: data never runs code unless its source is trusted.

A pickle whose ``__reduce__`` would run a command is served over loopback http, and the runner
resumes from it, evaluates it, and loads its weights: the command never runs, and the error
says the checkpoint is not trusted and how to mark it. Real Lightning checkpoints still load
with ``weights_only=True``; ``trusted: true`` (manifest) and ``--src_checkpoint_trusted``
(flags) unpickle in full.
"""

from __future__ import annotations

import http.server
import os
import pathlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from runner_helpers import TrainedRun, run_flags

from himl_manifest.errors import CheckpointError
from himl_manifest.manifest.build import normalize
from himl_manifest.runner import checkpoints
from himl_manifest.runner.execute import execute
from himl_manifest.runner.settings import from_run_spec
from himl_manifest.spec import RunSpec, seed_spec


class Payload:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def served(tmp_path: Path, trained: TrainedRun, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """http://127.0.0.1:<port>/ serving ``evil.ckpt`` (a Lightning checkpoint whose extra key
    runs a command when unpickled), ``real.ckpt`` (the trained run's last checkpoint) and
    ``paths.ckpt`` (the same with a pathlib.Path hyper-parameter: honest, but not plain data)."""
    folder = tmp_path / "served"
    folder.mkdir()
    real = torch.load(trained.last, map_location="cpu", weights_only=True)
    torch.save({**real, "payload": Payload(tmp_path / "MARKER")}, folder / "evil.ckpt")
    (folder / "real.ckpt").write_bytes(trained.last.read_bytes())
    hparams = {"data_dir": pathlib.PurePosixPath("/data/hello")}
    torch.save({**real, "hyper_parameters": hparams}, folder / "paths.ckpt")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(folder), **kwargs)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(checkpoints.ALLOW_LOOPBACK_ENV, "1")
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _marker(tmp_path: Path) -> Path:
    return tmp_path / "MARKER"


@pytest.mark.parametrize(
    "flags",
    [
        ["--resume_training", "--max_epochs=5"],  # our own read (epochs done)
        ["--run_inference_only"],  # Lightning's read (Trainer.validate/test(ckpt_path))
        ["--max_epochs=1"],  # the weights loaded before training
    ],
    ids=["resume", "inference", "weights"],
)
def test_an_untrusted_url_never_runs_code(
    project: Path, served: str, tmp_path: Path, flags: list[str]
) -> None:
    with pytest.raises(CheckpointError) as caught:
        run_flags(
            "--model=HelloWorld",
            f"--src_checkpoint={served}/evil.ckpt",
            "--num_sanity_val_steps=0",
            *flags,
        )
    message = str(caught.value)
    assert "is not trusted" in message
    assert "trusted: true" in message and "--src_checkpoint_trusted" in message
    assert "GLOBAL" in message  # what it would have run
    assert not _marker(tmp_path).exists()


def test_a_real_lightning_checkpoint_loads_untrusted(
    project: Path, served: str, trained: TrainedRun
) -> None:
    """weights_only=True is enough for Lightning's own checkpoints: resume and inference."""
    (evaluated,) = run_flags(
        "--model=HelloWorld", "--run_inference_only", f"--src_checkpoint={served}/real.ckpt"
    )
    assert evaluated.metrics["test_mse"] == trained.metrics["test_mse"]
    (resumed,) = run_flags(
        "--model=HelloWorld",
        "--resume_training",
        "--max_epochs=3",
        "--limit_train_batches=2",
        "--num_sanity_val_steps=0",
        f"--src_checkpoint={served}/real.ckpt",
    )
    assert resumed.ok and "test_mse" in resumed.metrics


def test_the_trusted_flag_unpickles_in_full(
    project: Path, served: str, trained: TrainedRun
) -> None:
    url = f"{served}/paths.ckpt"
    with pytest.raises(CheckpointError, match="is not trusted"):
        run_flags("--model=HelloWorld", "--run_inference_only", f"--src_checkpoint={url}")
    (result,) = run_flags(
        "--model=HelloWorld",
        "--run_inference_only",
        f"--src_checkpoint={url}",
        "--src_checkpoint_trusted=True",
    )
    assert result.metrics["test_mse"] == trained.metrics["test_mse"]


def _spec(source: dict[str, object], **manifest: object) -> RunSpec:
    document = {"apiVersion": "himl/v1", "kind": "Experiment", "name": "hello"}
    document.update({"container": "HelloWorld", "checkpoint": {"source": source}, **manifest})
    return RunSpec("hello", 0, seed_spec(normalize(document), 0), "v1:" + "0" * 64, "hello-s0-1")


def test_a_manifest_url_is_trusted_only_when_marked(
    project: Path, served: str, trained: TrainedRun, tmp_path: Path
) -> None:
    url = f"{served}/paths.ckpt"
    plain = from_run_spec(_spec({"url": url}, mode="inference"), root=project)
    assert "src_checkpoint_trusted" not in plain.overrides
    with pytest.raises(CheckpointError, match="is not trusted"):
        execute(plain)
    marked = from_run_spec(_spec({"url": url, "trusted": True}, mode="inference"), root=project)
    assert marked.overrides["src_checkpoint_trusted"] is True
    (result,) = execute(marked)
    assert result.metrics["test_mse"] == trained.metrics["test_mse"]
    assert not _marker(tmp_path).exists()


def test_local_files_and_runs_are_trusted() -> None:
    assert checkpoints.is_trusted("checkpoints/model.ckpt")
    assert checkpoints.is_trusted("hello-s0-12345678:best_val_loss.ckpt")
    assert not checkpoints.is_trusted("https://example.org/m.ckpt")
    assert checkpoints.is_trusted("https://example.org/m.ckpt", marked=True)


def test_a_local_file_loads_in_full(project: Path, tmp_path: Path, trained: TrainedRun) -> None:
    """A local file is the user's own: unpickled in full (the payload runs: trust is honoured)."""
    real = torch.load(trained.last, map_location="cpu", weights_only=True)
    local = project / "local.ckpt"
    torch.save({**real, "payload": Payload(_marker(tmp_path))}, local)
    (result,) = run_flags("--model=HelloWorld", "--run_inference_only", f"--src_checkpoint={local}")
    assert result.ok
    assert _marker(tmp_path).exists()
