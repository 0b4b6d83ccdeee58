"""The code snapshot of an Azure ML job: what would be uploaded, checked before it is.

Azure ML uploads the code root as an anonymous code asset. azure-ai-ml 1.35 chooses the files
with the ignore file of that folder only: ``.amlignore`` if there is one, else ``.gitignore``
(never both, never one in a sub-folder or a parent), each pattern matched against every file's
path relative to the folder, the last matching pattern deciding (so ``!keep.txt`` re-includes).
Nothing else is skipped: not even ``.git/``. :func:`collect` selects the same files, with the
same pattern library (``pathspec``, a dependency of azure-ai-ml), and reports, before anything
is uploaded:

- the total size against :data:`SIZE_LIMIT` (the service refuses larger snapshots, late:
  "Your total snapshot size exceeds the limit"), and the largest files with the ``.amlignore``
  lines that would leave them out;
- symlinks, by name: the SDK follows them, and one that is broken or points outside the code
  root fails the upload or uploads files from elsewhere;
- a deterministic content hash: the code asset's own (``Code._hash_sha256``), computed as the
  SDK computes it, so equal trees give equal hashes and the service's deduplication can be
  predicted.

The upload itself is :mod:`.upload`'s: it stages exactly these files and uploads them as the
job's code asset.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The service's snapshot limit. The reference's troubleshooting names a limit without its
#: value; 300 MB is Azure ML's documented default (raisable on the service side, at the cost
#: of slower jobs). Our check uses the default.
SIZE_LIMIT = 300 * 1024 * 1024
AML_IGNORE = ".amlignore"
GIT_IGNORE = ".gitignore"
#: How many of the largest files a report names.
LARGEST = 10
_CHUNK = 1 << 20


@dataclass(frozen=True)
class SnapshotFile:
    """One file of the snapshot."""

    relative: str  # POSIX path relative to the code root
    size: int


@dataclass(frozen=True)
class Symlink:
    """A symlink inside the code root that the upload would follow."""

    relative: str
    target: str  # what the link says (os.readlink)
    broken: bool
    #: Resolves to somewhere outside the code root.
    outside: bool
    is_dir: bool


@dataclass
class Snapshot:
    """The files of a code root that Azure ML would upload, and what is notable about them."""

    root: Path
    #: The ignore file that applies (``.amlignore``, ``.gitignore``), or None.
    ignore_file: str | None
    files: list[SnapshotFile] = field(default_factory=list)
    symlinks: list[Symlink] = field(default_factory=list)
    _digest: str | None = field(default=None, repr=False)

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def over_limit(self) -> bool:
        return self.total_size > SIZE_LIMIT

    def largest(self, count: int = LARGEST) -> list[SnapshotFile]:
        return sorted(self.files, key=lambda f: (-f.size, f.relative))[:count]

    def content_hash(self) -> str:
        """sha256 of the snapshot, as azure-ai-ml computes a code asset's content hash: the
        file count, then ``#<path>#<size>`` of each file, then their bytes, files in the
        order of their lower-cased paths. Read once, then remembered."""
        if self._digest is None:
            ordered = sorted(self.files, key=lambda f: f.relative.lower())
            digest = hashlib.sha256(str(len(ordered)).encode())
            for item in ordered:
                digest.update(f"#{item.relative}#".encode())
                digest.update(str(item.size).encode())
            for item in ordered:
                with (self.root / item.relative).open("rb") as handle:
                    while chunk := handle.read(_CHUNK):
                        digest.update(chunk)
            self._digest = digest.hexdigest()
        return self._digest


def ignore_file_of(root: Path) -> Path | None:
    """The ignore file the SDK uses for ``root``: ``.amlignore``, else ``.gitignore``."""
    for name in (AML_IGNORE, GIT_IGNORE):
        if (root / name).exists():
            return root / name
    return None


class _Matcher:
    """The SDK's reading of an ignore file: its lines right-stripped, gitignore patterns,
    last match wins, matched against file paths relative to the root."""

    def __init__(
        self,
        ignore_file: Path | None,
        leave_out: set[Path] | None = None,
        leave_out_names: set[str] | None = None,
    ) -> None:
        self.leave_out = leave_out or set()
        self.leave_out_names = leave_out_names or set()
        self.spec: Any = None
        #: A directory may be skipped whole only when no pattern re-includes anything.
        self.can_prune = True
        if ignore_file is None:
            return
        import pathspec

        lines = [line.rstrip() for line in ignore_file.read_text(encoding="utf-8").splitlines()]
        self.spec = pathspec.PathSpec.from_lines("gitignore", [line for line in lines if line])
        self.can_prune = not any(line.lstrip().startswith("!") for line in lines)

    def excluded(self, relative: str) -> bool:
        return self.spec is not None and bool(self.spec.match_file(relative))

    def excluded_dir(self, relative: str) -> bool:
        # "outputs/", "outputs", "/outputs", "a/**" and "*" all match "outputs/": every file
        # under the folder is then excluded, unless a later "!" pattern re-includes one.
        return self.can_prune and self.excluded(f"{relative}/")


def own_paths(project_root: Path) -> list[Path]:
    """What this tool keeps in a project and never belongs in a code snapshot: the local run
    store (``mlflow.db`` and SQLite's side files), its state folder (``.himl/``), MLflow's
    artifact folder and the run folders (the outputs root). Each would change the snapshot's
    hash on every local run, so every job would upload its code anew."""
    from himl_manifest.paths import STORE_FILE
    from himl_manifest.records import outputs_root

    root = project_root.resolve()
    store = [root / f"{STORE_FILE}{suffix}" for suffix in ("", "-journal", "-wal", "-shm")]
    return [*store, root / ".himl", root / "mlartifacts", outputs_root(root)]


#: Folders a code snapshot never carries, wherever they are: git's own (the job needs none of
#: it: provenance travels in the run spec; ``git status`` rewrites its index, so the snapshot's
#: hash would change on every apply) and Python's bytecode caches (written by every local run).
NEVER_UPLOADED = (".git", "__pycache__")


def code_snapshot(project_root: Path, code_root: str | Path = ".") -> Snapshot:
    """The snapshot of a run's code root (relative to the project root), without what this
    tool keeps in the project (:func:`own_paths`) and the folders of :data:`NEVER_UPLOADED`:
    what pre-flight checks and what is uploaded."""
    return collect(
        project_root / code_root, leave_out=own_paths(project_root), leave_out_names=NEVER_UPLOADED
    )


def collect(
    root: Path, *, leave_out: Iterable[Path] = (), leave_out_names: Iterable[str] = ()
) -> Snapshot:
    """The snapshot of the code root ``root`` (see the module doc), without the files and
    folders of ``leave_out`` (absolute paths: :func:`own_paths`) and the folders named as in
    ``leave_out_names``. Symlinks are reported and not followed; a symlinked file counts with
    its target's size when it has one."""
    root = root.resolve()
    ignore = ignore_file_of(root)
    matcher = _Matcher(ignore, {path.resolve() for path in leave_out}, set(leave_out_names))
    snapshot = Snapshot(root=root, ignore_file=ignore.name if ignore else None)
    for relative, entry in _walk(root, matcher):
        if entry.is_symlink():
            snapshot.symlinks.append(_symlink(root, relative, entry))
            if entry.is_file():
                snapshot.files.append(SnapshotFile(relative, entry.stat().st_size))
        elif entry.is_file():
            snapshot.files.append(SnapshotFile(relative, entry.stat(follow_symlinks=False).st_size))
    snapshot.files.sort(key=lambda f: f.relative)
    return snapshot


def _walk(root: Path, matcher: _Matcher) -> Iterator[tuple[str, Path]]:
    """``(relative path, path)`` of every entry the SDK would consider, not through symlinks."""
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            path = Path(entry.path)
            if path in matcher.leave_out or (
                entry.name in matcher.leave_out_names and entry.is_dir(follow_symlinks=False)
            ):
                continue
            relative = path.relative_to(root).as_posix()
            if entry.is_dir(follow_symlinks=False):
                if not matcher.excluded_dir(relative):
                    pending.append(path)
            elif not matcher.excluded(relative):
                yield relative, path


def _symlink(root: Path, relative: str, path: Path) -> Symlink:
    target = os.readlink(path)
    try:
        resolved = path.resolve(strict=True)
        broken = False
    except (OSError, RuntimeError):
        resolved, broken = path, True
    outside = not broken and not resolved.is_relative_to(root)
    return Symlink(relative, target, broken, outside, is_dir=not broken and resolved.is_dir())


def amlignore_line(relative: str, snapshot_files: Iterable[SnapshotFile] = ()) -> str:
    """The ``.amlignore`` line that leaves ``relative`` out: its top folder when that holds
    other files of the snapshot too (``data/``), else the file itself (``/model.ckpt``)."""
    top, _, rest = relative.partition("/")
    if rest and sum(1 for f in snapshot_files if f.relative.startswith(f"{top}/")) > 1:
        return f"{top}/"
    return f"/{relative}"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover
