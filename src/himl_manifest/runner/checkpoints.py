"""Checkpoint sources: a local file, an https URL, or a run reference ``<run>[:<path>]``.

- A local path must name an existing file.
- A URL is downloaded once into ``<project root>/.himl/cache/checkpoints/<sha256 of the URL>/``,
  with a size bound (:data:`MAX_BYTES_ENV`) and, when given, a sha256 check. Only https, except
  plain http to the loopback address when ``HIML_ALLOW_HTTP_LOOPBACK=1`` (tests).
- ``<run>[:<path>]`` is a run of the run store, resolved by the store itself
  (:meth:`himl_manifest.backends.base.RunStore.resolve_checkpoint`, the same rules apply uses:
  :func:`himl_manifest.records.path_in_run`).

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


def is_trusted(source: str, *, marked: bool = False) -> bool:
    """Whether the checkpoint ``source`` may be unpickled in full (which can run code).

    A local file (the user's own machine; a manifest's ``path`` is inside the repository) and
    a run reference (a run of this project's run store) are trusted; a URL only when the user
    marks it (``trusted: true`` in the manifest, ``--src_checkpoint_trusted``)."""
    if source.strip().lower().startswith(("https://", "http://")):
        return marked
    return True


#: Classes a Lightning checkpoint may hold besides tensors and plain data, allowed when loading
#: with ``weights_only=True`` (importable ones only): Lightning's hyper-parameter dictionary.
_SAFE_GLOBALS = (
    ("lightning.fabric.utilities.data", "AttributeDict"),
    ("lightning_fabric.utilities.data", "AttributeDict"),
)


def safe_globals() -> Any:
    """A context in which ``torch.load(weights_only=True)`` (ours, and Lightning's when given
    ``weights_only=True``) accepts what Lightning checkpoints hold."""
    import importlib

    import torch

    allowed = []
    for module, name in _SAFE_GLOBALS:
        try:
            allowed.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return torch.serialization.safe_globals(allowed)


def untrusted_error(path: Path | str, exc: BaseException) -> CheckpointError:
    """The error of a checkpoint that holds more than data and was not marked trusted."""
    detail = str(exc).strip().splitlines()
    reason = next((line for line in detail if "GLOBAL" in line or "global" in line), "")
    reason = f" ({reason.strip()})" if reason else ""
    return CheckpointError(
        f"checkpoint {path} is not trusted: it holds Python objects besides tensors and plain "
        f"data{reason}, and unpickling them could run code. Only if you trust its source, mark "
        "it trusted: `trusted: true` under the manifest's checkpoint.source, or "
        "--src_checkpoint_trusted=True (local files and runs of this project are trusted)"
    )


def load(path: Path, *, trusted: bool = False) -> dict[str, Any]:
    """A checkpoint file's content (on the CPU, tensors memory-mapped when possible).

    Unless ``trusted``, only tensors and plain data are unpickled (``weights_only=True``): a
    checkpoint that holds anything else is refused with :func:`untrusted_error`, before any of
    its code could run."""
    import pickle

    import torch

    weights_only = not trusted
    try:
        with safe_globals():
            try:
                data = torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
            except pickle.UnpicklingError:
                raise
            except RuntimeError:
                data = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if weights_only:
            raise untrusted_error(path, exc) from exc
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
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


#: The run's own recovery checkpoints: ``last.ckpt``, and Lightning's versioned ``last-v1.ckpt``
#: (written by earlier versions when a ``last.ckpt`` was already there).
_RECOVERY_NAME = re.compile(r"^last(-v\d+)?\.ckpt$")


def recovery_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a restarted run resumes from: of its own recovery checkpoints in its
    ``checkpoints/`` folder (``last.ckpt``, ``last-v<n>.ckpt``; never another ``*.ckpt``, such
    as ``best_val_loss.ckpt`` or a file put there by hand), the one with the most epochs done
    (the newest file on a tie). A file that cannot be read is passed over."""
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.iterdir() if _RECOVERY_NAME.match(p.name) and p.is_file())
    if found == [folder / DEFAULT_CHECKPOINT_FILE]:
        return found[0]
    scored = []
    for path in found:
        try:
            done = epochs_done(load(path, trusted=True))  # the run's own checkpoint
        except Exception:  # truncated or not a checkpoint: never resumed from
            continue
        scored.append((done, path.stat().st_mtime, path))
    return max(scored)[2] if scored else None
