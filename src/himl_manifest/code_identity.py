"""The code that defines a run, and its identity: git tree hashes of committed content.

A run's identity covers the code its container comes from (DESIGN.md decision 1). What code:
the manifest's ``code.paths`` (files or folders, relative to the repository root), else the
container's top-level package (``container: myproj.models.Blobs`` -> ``myproj``; a bare class
name is a shipped container, of ``himl_manifest``). The package is looked for as a folder (or a
``<package>.py`` module) in the code root, the repository root, and the ``src/`` folder of each,
the folders the job imports from: found by looking at the file system, never by importing it.

Its identity:

- a path inside the repository: the git object id of its **committed** content
  (``git ls-tree HEAD``: the tree hash of a folder, the blob hash of a file), as
  ``git:<40 hex>``. Uncommitted changes do not count (the run will use them, but its identity is
  the last commit's): they give a warning, as does a path not committed at all (no identity);
- a package not in the repository (an installed one, or the shipped containers of an installed
  himl-manifest): its distribution and version, ``dist:<name>==<version>``, read from the
  installed metadata (:mod:`importlib.metadata`), never from the files' bytes;
- nothing found, or no git repository: no identity (None), with a warning.

Git is asked once per repository per plan for all the paths of all the manifests
(:meth:`CodeIdentities.resolve`): ``git ls-tree`` for the ids, ``git status`` for uncommitted
changes. Standard library only.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The package of containers named by a bare class name (``container: HelloWorld``).
SHIPPED_PACKAGE = "himl_manifest"
#: Prefixes of an identity value.
GIT_PREFIX = "git:"
DIST_PREFIX = "dist:"
#: Untracked files that never count as uncommitted changes: Python's own caches.
_CACHE_PARTS = ("__pycache__",)
_CACHE_SUFFIXES = (".pyc", ".pyo")
_GIT_TIMEOUT_S = 60


@dataclass(frozen=True)
class CodeTarget:
    """One piece of code a run is defined by.

    ``key`` is how plans show it: a repository path (``myproj/`` for a folder, ``train.py`` for
    a file) or, for code outside the repository, the package name. ``repo_path`` is the path
    relative to the repository root (POSIX, no trailing slash); None for code outside it."""

    key: str
    repo_path: str | None = None
    package: str | None = None


def short(identity: str | None) -> str:
    """An identity as a plan shows it: 7 hex of a git id, ``name version`` of a distribution."""
    if identity is None:
        return "none"
    if identity.startswith(GIT_PREFIX):
        return identity[len(GIT_PREFIX) :][:7]
    if identity.startswith(DIST_PREFIX):
        return identity[len(DIST_PREFIX) :].replace("==", " ")
    return identity


def container_package(container: str) -> str:
    """The top-level package of a container name (a bare class name: the shipped package)."""
    return container.split(".", 1)[0] if "." in container else SHIPPED_PACKAGE


def normal_path(value: str) -> str:
    """A manifest's code path as a POSIX path relative to the repository root, without ``./``
    or a trailing slash (``"."``: the whole repository)."""
    text = os.path.normpath(value.replace("\\", "/")).replace("\\", "/")
    return "." if text in ("", ".") else text.strip("/")


class CodePathError(ValueError):
    """A ``code.paths`` entry that is not a file or folder inside the repository."""


class CodeIdentities:
    """Resolves code targets to identities for one plan, with one git call per repository.

    ``warnings`` collects, once each, what the plan should tell the user (uncommitted changes,
    code that is not committed, no repository, a package that is nowhere)."""

    def __init__(self) -> None:
        self.warnings: list[str] = []
        self._found: dict[tuple[Path, str, str], CodeTarget] = {}
        self._dists: dict[str, str | None] = {}
        self._git: dict[tuple[Path, str], str | None] = {}

    # --- which code ---------------------------------------------------------------------------

    def targets(self, root: Path, spec: Mapping[str, Any]) -> list[CodeTarget]:
        """The code an experiment's runs are defined by (none when ``code.track`` is false).

        :class:`CodePathError` names a ``code.paths`` entry that is not in the repository."""
        code = spec.get("code") or {}
        if code.get("track", True) is False:
            return []
        paths = code.get("paths")
        if paths:
            return [self._explicit(root, str(value), index) for index, value in enumerate(paths)]
        package = container_package(str(spec["container"]))
        code_root = str(spec.get("code_root", "."))
        key = (root, code_root, package)
        if key not in self._found:
            self._found[key] = self._package(root, code_root, package)
        return [self._found[key]]

    @staticmethod
    def _explicit(root: Path, value: str, index: int) -> CodeTarget:
        path = normal_path(value)
        where = f"code.paths[{index}]"
        if os.path.isabs(value) or path == ".." or path.startswith("../"):
            raise CodePathError(f"{where}: {value!r} is not inside the repository")
        full = root / path
        if full.is_dir():
            return CodeTarget(key="./" if path == "." else f"{path}/", repo_path=path)
        if full.is_file():
            return CodeTarget(key=path, repo_path=path)
        raise CodePathError(f"{where}: {value!r} does not exist in the repository ({root})")

    @staticmethod
    def _package(root: Path, code_root: str, package: str) -> CodeTarget:
        code = Path(os.path.normpath(root / code_root))
        folders = dict.fromkeys((code, root, code / "src", root / "src"))
        for folder in folders:
            for candidate, is_dir in ((folder / package, True), (folder / f"{package}.py", False)):
                if (candidate.is_dir() if is_dir else candidate.is_file()) and (
                    candidate.is_relative_to(root)
                ):
                    relative = candidate.relative_to(root).as_posix()
                    key = f"{relative}/" if is_dir else relative
                    return CodeTarget(key=key, repo_path=relative, package=package)
        return CodeTarget(key=package, package=package)

    # --- their identities -----------------------------------------------------------------------

    def resolve(self, root: Path, targets: Iterable[CodeTarget]) -> None:
        """Ask git (once) about every repository path among ``targets`` not asked yet."""
        wanted = sorted({t.repo_path for t in targets if t.repo_path is not None})
        missing = [path for path in wanted if (root, path) not in self._git]
        if missing:
            self._ask_git(root, missing)

    def identity(self, root: Path, target: CodeTarget) -> str | None:
        """The identity of one target (:meth:`resolve` its repository paths first)."""
        if target.repo_path is None:
            return self._distribution(target.package or target.key)
        if (root, target.repo_path) not in self._git:
            self.resolve(root, [target])
        return self._git[(root, target.repo_path)]

    def _warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)

    def _ask_git(self, root: Path, paths: list[str]) -> None:
        listed = _git(root, ["ls-tree", "-z", "HEAD", "--", *paths])
        if listed is None:
            for path in paths:
                self._git[(root, path)] = None
            shown = ", ".join(_shown(root, p) for p in paths)
            self._warn(
                f"{root} is not a git repository with a commit (or git is not installed): "
                f"the code of its runs ({shown}) is not part of their identity"
            )
            return
        ids: dict[str, str] = {}
        for entry in filter(None, listed.split("\0")):
            meta, _, name = entry.partition("\t")
            parts = meta.split()
            if len(parts) == 3:
                ids[name] = GIT_PREFIX + parts[2]
        if "." in paths:  # the whole repository: HEAD's root tree
            tree = _git(root, ["rev-parse", "HEAD^{tree}"])
            if tree:
                ids["."] = GIT_PREFIX + tree.strip()
        for path in paths:
            self._git[(root, path)] = ids.get(path)
            if path not in ids:
                self._warn(
                    f"{_shown(root, path)} is not committed: its runs' identity records no "
                    "code until it is (commit it, then plan again)"
                )
        for path in sorted(_dirty(root, paths)):
            if path in ids:
                self._warn(
                    f"{_shown(root, path)} has uncommitted changes: the run will use them but its "
                    "identity is the last commit's (commit them, then plan again)"
                )

    def _distribution(self, package: str) -> str | None:
        if package not in self._dists:
            self._dists[package] = installed_distribution(package)
            if self._dists[package] is None:
                self._warn(
                    f"package {package!r} is neither in the repository nor installed: the code "
                    "of its runs is not part of their identity"
                )
        return self._dists[package]


@functools.lru_cache(maxsize=256)
def installed_distribution(package: str) -> str | None:
    """``dist:<name>==<version>`` of the installed distribution that provides ``package``, from
    its metadata (nothing is imported); None when none does. The distribution named like the
    package is tried first (cheap); else the map of every installed distribution's packages."""
    from importlib import metadata

    guesses = dict.fromkeys((package.replace("_", "-"), package))
    for name in guesses:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return f"{DIST_PREFIX}{dist.metadata['Name']}=={dist.version}"
    for name in metadata.packages_distributions().get(package, []):
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        return f"{DIST_PREFIX}{dist.metadata['Name']}=={dist.version}"
    return None


def _dirty(root: Path, paths: list[str]) -> set[str]:
    """The paths (of ``paths``) with uncommitted changes: modified, staged, deleted, or new files
    git does not ignore (Python caches left out)."""
    output = _git(root, ["status", "--porcelain", "-z", "--untracked-files=all", "--", *paths])
    if not output:
        return set()
    changed: list[str] = []
    entries = output.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if len(entry) < 4:
            continue
        status, name = entry[:2], entry[3:]
        if "R" in status or "C" in status:
            index += 1  # the next entry is the path it was renamed or copied from
        if status == "??" and _is_cache(name):
            continue
        changed.append(name)
    dirty = set()
    for path in paths:
        prefix = "" if path == "." else f"{path}/"
        if any(name == path or name.startswith(prefix) for name in changed):
            dirty.add(path)
    return dirty


def _is_cache(name: str) -> bool:
    parts = name.split("/")
    return any(part in _CACHE_PARTS for part in parts) or name.endswith(_CACHE_SUFFIXES)


def _shown(root: Path, path: str) -> str:
    """A repository path as plans show it: folders end with ``/``."""
    if path == ".":
        return "./"
    return f"{path}/" if (root / path).is_dir() else path


def _git(root: Path, args: list[str]) -> str | None:
    """stdout of ``git -C root <args>``; None when git fails or is not there."""
    env = {
        **os.environ,
        "GIT_OPTIONAL_LOCKS": "0",  # status may not take the index lock: plans read only
        "LC_ALL": "C",
        "GIT_CEILING_DIRECTORIES": str(root.parent),  # never a repository above the root
    }
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            env=env,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None
