"""Checkpoint sources: local files, URLs served by a local HTTP server, run references."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest
from runner_helpers import TrainedRun, run_flags

from himl_manifest.errors import CheckpointError
from himl_manifest.records import path_in_run
from himl_manifest.runner import checkpoints, tracking


@pytest.fixture
def server(trained: TrainedRun, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """http://127.0.0.1:<port>/ serving the trained run's checkpoints folder."""
    folder = trained.last.parent

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


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_url_checkpoint_with_sha256_is_downloaded_cached_and_used(
    project: Path, trained: TrainedRun, server: str
) -> None:
    url = f"{server}/last.ckpt"
    (result,) = run_flags(
        "--model=HelloWorld",
        "--run_inference_only",
        f"--src_checkpoint={url}",
        f"--src_checkpoint_sha256={sha256(trained.last)}",
    )
    assert result.metrics["test_mse"] == trained.metrics["test_mse"]
    cached = Path(result.checkpoint)
    assert cached.is_relative_to(project / ".himl" / "cache" / "checkpoints")
    assert cached.read_bytes() == trained.last.read_bytes()
    assert checkpoints.download(url) == cached  # from the cache


def test_url_checkpoint_with_the_wrong_sha256_is_refused(project: Path, server: str) -> None:
    with pytest.raises(CheckpointError, match="expected 0000"):
        run_flags(
            "--model=HelloWorld",
            "--run_inference_only",
            f"--src_checkpoint={server}/best_val_loss.ckpt",
            "--src_checkpoint_sha256=" + "0" * 64,
        )
    cache = project / ".himl" / "cache" / "checkpoints"
    assert not any(p.is_file() for p in cache.rglob("*"))


def test_url_limits(project: Path, server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checkpoints.MAX_BYTES_ENV, "1000")
    with pytest.raises(CheckpointError, match="over 1000"):
        checkpoints.download(f"{server}/last.ckpt")
    with pytest.raises(CheckpointError, match=r"404|Not Found"):
        checkpoints.download(f"{server}/missing.ckpt")
    monkeypatch.delenv(checkpoints.ALLOW_LOOPBACK_ENV)
    with pytest.raises(CheckpointError, match="must use https"):
        checkpoints.download(f"{server}/last.ckpt")


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("", "checkpoints/last.ckpt"),
        ("best_val_loss.ckpt", "checkpoints/best_val_loss.ckpt"),
        ("outputs/checkpoints/x.ckpt", "checkpoints/x.ckpt"),
        ("other/y.ckpt", "other/y.ckpt"),
    ],
)
def test_paths_inside_a_run(relative: str, expected: str) -> None:
    assert path_in_run(relative) == PurePosixPath(expected)


def test_paths_inside_a_run_stay_inside() -> None:
    with pytest.raises(CheckpointError):
        path_in_run("../elsewhere.ckpt")


def test_run_references_resolve_through_the_run_store(trained: TrainedRun, project: Path) -> None:
    def find(reference: str) -> Path:
        return tracking.resolve_run_checkpoint(reference, trained.uri)[0]

    by_id = checkpoints.resolve_source(trained.run_id, resolve_run=find)
    assert by_id == trained.last
    by_name = checkpoints.resolve_source("upstream:best_val_loss.ckpt", resolve_run=find)
    assert by_name == trained.output_dir / "checkpoints" / "best_val_loss.ckpt"
    with pytest.raises(CheckpointError, match="no run 'nobody'"):
        checkpoints.resolve_source("nobody", resolve_run=find)
    with pytest.raises(CheckpointError, match=r"has no checkpoints/none\.ckpt"):
        checkpoints.resolve_source("upstream:none.ckpt", resolve_run=find)
    with pytest.raises(CheckpointError, match="Invalid checkpoint"):
        checkpoints.resolve_source("no/such/file.ckpt", resolve_run=find)


def test_inference_from_a_run_reference(project: Path, trained: TrainedRun) -> None:
    (result,) = run_flags(
        "--model=HelloWorld",
        "--run_inference_only",
        f"--src_checkpoint={trained.run_id}",
        f"--tracking_uri={trained.uri}",
    )
    assert result.checkpoint == str(trained.last)
    assert result.metrics["test_mse"] == trained.metrics["test_mse"]
