"""Checkpoint sources: a local file, an https URL, or a run reference ``<run>[:<path>]``.

- A local path must name an existing file.
- A URL is downloaded once into ``<project root>/.himl/cache/checkpoints/<sha256 of the URL>/``,
  with a size bound (:data:`MAX_BYTES_ENV`) and, when given, a sha256 check. Only https, except
  plain http to the loopback address when ``HIML_ALLOW_HTTP_LOOPBACK=1`` (tests).
- ``<run>[:<path>]`` is a run of the run store, resolved by the store itself
  (:meth:`himl_manifest.backends.base.RunStore.resolve_checkpoint`, the same rules apply uses:
  :func:`himl_manifest.backends.protocol.path_in_run`).

Anything else is a :class:`~himl_manifest.errors.CheckpointError`.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from himl_manifest import paths
from himl_manifest.errors import CheckpointError
from himl_manifest.model import DEFAULT_CHECKPOINT_FILE

#: Largest checkpoint downloaded, in bytes (environment override).
MAX_BYTES_ENV = "HIML_MAX_CHECKPOINT_BYTES"
DEFAULT_MAX_BYTES = 64 << 30
#: Allows plain http to 127.0.0.1 / localhost (for tests with a local server).
ALLOW_LOOPBACK_ENV = "HIML_ALLOW_HTTP_LOOPBACK"
_RUN_REFERENCE = re.compile(r"^[A-Za-z0-9_.-]+(:[^:\s]+)?$")
_CHUNK = 1 << 20

#: Resolves a run reference ``<run>[:<dir/>file.ckpt]`` to its checkpoint file (the run store).
RunResolver = Callable[[str], Path]


def resolve_source(
    source: str, *, sha256: str | None = None, resolve_run: RunResolver | None = None
) -> Path:
    """The local checkpoint file that ``source`` names (downloading it if it is a URL)."""
    source = source.strip()
    if source.lower().startswith(("https://", "http://")):
        return download(source, sha256)
    local = Path(source).expanduser()
    if local.is_file():
        return local.resolve()
    if _RUN_REFERENCE.match(source):
        if resolve_run is None:
            raise CheckpointError(f"cannot resolve run reference {source!r}: no run store")
        return resolve_run(source)
    raise CheckpointError(
        f"Invalid checkpoint {source!r}: not an existing file, an https URL, or a run reference "
        "<run>[:<dir/>file.ckpt]"
    )


def _max_bytes() -> int:
    try:
        return int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
    except ValueError:
        return DEFAULT_MAX_BYTES


def _check_url(url: str) -> None:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https":
        return
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme == "http" and loopback and os.environ.get(ALLOW_LOOPBACK_ENV) == "1":
        return
    raise CheckpointError(f"checkpoint URL {url!r} must use https")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cache_folder(url: str) -> Path:
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()
    return paths.project_root() / ".himl" / "cache" / "checkpoints" / key


def download(url: str, sha256: str | None = None) -> Path:
    """The file at ``url``, from the cache when it is there (and matches ``sha256``)."""
    _check_url(url)
    expected = sha256.lower() if sha256 else None
    name = PurePosixPath(urllib.parse.urlsplit(url).path).name or "checkpoint.ckpt"
    target = cache_folder(url) / name
    if target.is_file() and (expected is None or file_sha256(target) == expected):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{name}.{os.getpid()}.part")
    try:
        actual = _fetch(url, partial)
        if expected is not None and actual != expected:
            raise CheckpointError(
                f"checkpoint {url} has sha256 {actual}, expected {expected}: not used"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _fetch(url: str, partial: Path) -> str:
    limit = _max_bytes()
    digest = hashlib.sha256()
    size = 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            declared = int(response.headers.get("Content-Length") or 0)
            if declared > limit:
                raise CheckpointError(f"checkpoint {url} is {declared} bytes, over {limit}")
            with open(partial, "wb") as out:
                for chunk in iter(lambda: response.read(_CHUNK), b""):
                    size += len(chunk)
                    if size > limit:
                        raise CheckpointError(f"checkpoint {url} is over {limit} bytes")
                    digest.update(chunk)
                    out.write(chunk)
    except OSError as exc:
        raise CheckpointError(f"cannot download checkpoint {url}: {exc}") from exc
    return digest.hexdigest()


def load(path: Path) -> dict[str, Any]:
    """A checkpoint file's content (on the CPU, tensors memory-mapped when possible)."""
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except RuntimeError:
        data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a Lightning checkpoint")
    return data


def epochs_done(checkpoint: dict[str, Any]) -> int:
    """How many training epochs a Lightning checkpoint has completed."""
    try:
        progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["completed"]
        return int(progress)
    except (KeyError, TypeError):
        return int(checkpoint.get("epoch", -1)) + 1


def recovery_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint a restarted run left in its own ``checkpoints/`` folder."""
    if not folder.is_dir():
        return None
    if (folder / DEFAULT_CHECKPOINT_FILE).is_file():
        return folder / DEFAULT_CHECKPOINT_FILE
    found = sorted(folder.glob("*.ckpt"))
    if not found:
        return None
    return max(found, key=lambda p: (int(load(p).get("epoch", -1)), p.stat().st_mtime))
