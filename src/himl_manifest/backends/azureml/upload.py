"""The code of Azure ML jobs: one code asset per code root, uploaded once per apply.

A job's ``code`` is a code asset, named by its ARM id. :class:`CodeAssets` makes one per code
root the first time a batch needs it, through azure-ai-ml's own code-asset flow
(``MLClient._code.create_or_update``; azure-ai-ml 1.35 exports neither ``Code`` nor a public
``MLClient.code``): the versions with the snapshot's content hash are looked up first (an
unchanged tree uploads nothing), else the service hands out a blob SAS URI
(``startPendingUpload``), the files are uploaded there, and the code version is registered.

What is uploaded is exactly the snapshot :func:`.snapshot.collect` selected (and pre-flight
checked): its files are staged (hard-linked, else copied) into a folder of their own, so
nothing else of the code root can slip in (the tool's own store and run folders among them),
and the content hash is the one pre-flight saw.

Uploads of one project are serialized by a lock in its state folder (two applies on one
machine: the second finds the first's version by its hash and uploads nothing); "blob already
exists" from a race with another machine is retried once, when the hash lookup then finds the
other's version. Blob requests get short timeouts and few retries (the storage SDK's defaults
take about 85 s to give up on an unreachable endpoint), and every failure is one message that
says what failed: the SAS refused (403), storage unreachable, a 5xx.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from himl_manifest.backends.azureml.snapshot import Snapshot, code_snapshot
from himl_manifest.backends.azureml.workspace import (
    Timeouts,
    Workspace,
    is_azure_error,
    service_message,
    status_of,
    translate,
)
from himl_manifest.backends.local_lock import exclusive
from himl_manifest.errors import HimlError, StoreError

#: The lock file, in the project's state folder, that serializes uploads on one machine.
LOCK_FILE = Path(".himl") / "code-upload.lock"
#: How long an upload waits for another apply's upload on this machine.
LOCK_TIMEOUT_S = 900.0


def stage(snapshot: Snapshot, folder: Path) -> Path:
    """Put exactly the files of ``snapshot`` into ``folder`` (created; hard links where the
    file system allows, else copies; a symlinked file or folder becomes a copy of its target,
    as the SDK would upload it). Returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=False)
    for item in snapshot.files:
        source = snapshot.root / item.relative
        target = folder / item.relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            shutil.copy2(source, target)  # follows the link
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
    for link in snapshot.symlinks:
        if link.is_dir and not link.broken and not link.outside:
            shutil.copytree(snapshot.root / link.relative, folder / link.relative, symlinks=False)
    return folder


@contextmanager
def bounded_blob_requests(timeouts: Timeouts) -> Iterator[None]:
    """Blob clients the SDK makes while this is active get our timeouts and few, quick
    retries. azure-ai-ml builds its blob clients itself with the storage SDK's defaults (three
    retries 15 s apart and more): its module's ``BlobServiceClient`` is wrapped for the time
    of the upload."""
    from azure.ai.ml._artifacts import _blob_storage_helper as helper
    from azure.storage.blob import ExponentialRetry

    original = getattr(helper, "BlobServiceClient")  # noqa: B009 - not re-exported

    def bounded(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("connection_timeout", timeouts.connect_s)
        kwargs.setdefault("read_timeout", timeouts.deadline_s)
        retry = ExponentialRetry(  # type: ignore[no-untyped-call]
            initial_backoff=1, increment_base=2, retry_total=timeouts.retries
        )
        kwargs.setdefault("retry_policy", retry)
        return original(*args, **kwargs)

    setattr(helper, "BlobServiceClient", bounded)  # noqa: B010
    try:
        yield
    finally:
        setattr(helper, "BlobServiceClient", original)  # noqa: B010


class CodeAssets:
    """The code asset of each code root, made once (per instance: one per apply).

    ``client``: an ``MLClient``; ``root``: the project root (code roots are relative to it);
    ``snapshot_of``: (project root, code root) -> its snapshot (default
    :func:`.snapshot.code_snapshot`)."""

    def __init__(
        self,
        client: Any,
        root: Path,
        *,
        workspace: Workspace | None = None,
        timeouts: Timeouts | None = None,
        snapshot_of: Callable[[Path, str], Snapshot] = code_snapshot,
    ) -> None:
        self.client = client
        self.root = root
        self.workspace = workspace
        self.timeouts = timeouts or Timeouts.from_environment()
        self.snapshot_of = snapshot_of
        self._ids: dict[Path, str] = {}

    def code_id(self, code_root: str = ".") -> str:
        """The ARM id of the code asset of ``code_root`` (relative to the project root)."""
        folder = (self.root / code_root).resolve()
        if folder not in self._ids:
            self._ids[folder] = self._upload(code_root, folder)
        return self._ids[folder]

    def _upload(self, code_root: str, folder: Path) -> str:
        where = _shown(folder, self.root)
        doing = f"uploading the code of {where} to the Azure ML workspace"
        snapshot = self.snapshot_of(self.root, code_root)
        if not snapshot.files:
            raise StoreError(f"{doing}: the code snapshot has no files")
        with tempfile.TemporaryDirectory(prefix="himl-code-") as scratch:
            staged = stage(snapshot, Path(scratch) / (folder.name or "code"))
            with exclusive(self.root / LOCK_FILE, LOCK_TIMEOUT_S):
                try:
                    return self._create(staged, doing)
                except _AlreadyExists:  # raced another machine: the hash lookup finds its code
                    return self._create(staged, doing, again=True)

    def _create(self, staged: Path, doing: str, *, again: bool = False) -> str:
        from azure.ai.ml.entities._assets import Code

        try:
            with bounded_blob_requests(self.timeouts):
                code = self.client._code.create_or_update(Code(path=str(staged)))
        except HimlError:
            raise
        except Exception as exc:
            if not again and already_exists(exc):
                raise _AlreadyExists from exc
            raise upload_error(exc, doing, self.workspace, self._service_host()) from exc
        code_id = str(getattr(code, "id", "") or "")
        if not code_id:
            raise StoreError(f"{doing}: the service registered the code without an id")
        return code_id

    def _service_host(self) -> str:
        """``host:port`` of the workspace's service endpoint (what an unanswered request to
        the service names)."""
        base = str(getattr(self.client, "_base_url", "") or "")
        return urllib.parse.urlsplit(base).netloc


class _AlreadyExists(Exception):
    """A blob or code version of the upload existed already (a race with another apply)."""


def already_exists(exc: BaseException) -> bool:
    """Whether an upload failed because what it wrote existed already ("blob already
    exists", a 409)."""
    for cause in _causes(exc):
        text = str(cause).lower()
        if status_of(cause) == 409 or "already exists" in text or "blobalreadyexists" in text:
            return True
    return False


def _failed_url(chain: list[BaseException]) -> str | None:
    for exc in chain:
        response = getattr(exc, "response", None)
        url = getattr(getattr(response, "request", None), "url", None) or getattr(
            response, "url", None
        )
        if url:
            return str(url)
    return None


def _from_storage(chain: list[BaseException], service_host: str) -> bool:
    """Whether the failed request went to blob storage (the SAS URI), not to the service: its
    URL is not the workspace's, or, with no answer at all, the service's host is not the one
    that could not be reached."""
    url = _failed_url(chain)
    if url is not None:
        return "Microsoft.MachineLearningServices" not in url
    text = " ".join(str(e) for e in chain)
    return not service_host or service_host not in text


def upload_error(
    exc: BaseException, doing: str, workspace: Workspace | None, service_host: str = ""
) -> HimlError:
    """What failed in an upload, in one message: the SAS refused, storage unreachable or
    failing, or (a request to the service) the service's own error, translated."""
    chain = list(_causes(exc))
    if not _from_storage(chain, service_host):
        azure = next((e for e in chain if is_azure_error(e)), exc)
        return translate(azure, doing, workspace)
    status = next((s for s in map(status_of, chain) if s is not None), None)
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain).lower()
    if status == 403 or "authenticationfailed" in text or "authorizationfailure" in text:
        return StoreError(
            f"{doing}: the workspace's blob storage refused the upload (403 "
            f"{_storage_message(chain)}): the SAS the service handed out was not accepted; "
            "check the storage account's network rules and firewall"
        )
    if names & {"ServiceRequestError", "ServiceRequestTimeoutError", "ConnectionError"} or (
        "connection refused" in text or "failed to establish" in text
    ):
        return StoreError(
            f"{doing}: could not reach the workspace's blob storage "
            f"({_storage_message(chain)}); check the network (proxy, VPN, firewall, private "
            "endpoint) between this machine and the storage account"
        )
    if status is not None:
        return StoreError(
            f"{doing}: the workspace's blob storage answered {status} "
            f"({_storage_message(chain)})" + ("; try again later" if status >= 500 else "")
        )
    return StoreError(f"{doing}: {type(exc).__name__}: {_storage_message(chain)}")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (azure's ``inner_exception``/``error``, then Python's cause)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        inner = getattr(current, "inner_exception", None) or getattr(current, "error", None)
        nxt = current.__cause__ or current.__context__
        current = inner if isinstance(inner, BaseException) else nxt


def _storage_message(chain: list[BaseException]) -> str:
    for exc in chain:
        if status_of(exc) is not None:
            return service_message(exc)
    return service_message(chain[-1]) if chain else "no details"


def _shown(folder: Path, root: Path) -> str:
    try:
        relative = folder.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(folder)
    return "the project root" if relative == "." else relative
