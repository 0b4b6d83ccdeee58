"""Git provenance of applied manifests (GitPython), stamped on every run apply submits.

For each manifest: the commit that last changed it, its blob sha (of the file as applied), HEAD,
branch, the remote URL with credentials stripped, whether the manifest and the work tree are
dirty, who applied (git ``user.email``, else ``$USER``), when, and the tool and schema versions.
The keys become ``himl.provenance.<key>`` tags in the run store (see ``docs/store.md``).
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himl_manifest.errors import ConfigError

_SCHEME = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*)://", re.IGNORECASE)
#: Schemes whose user name is an account name (``ssh://git@host/...``), never a token.
_SSH_SCHEMES = frozenset({"ssh", "git+ssh", "ssh+git"})


def strip_credentials(url: str) -> str:
    """A remote URL with no secret left in it.

    - URLs with a scheme (``https://``, ``git+https://``, ``ssh://``, ...): the whole userinfo
      (everything before the *last* ``@`` of the authority, so ``user:tok1@tok2@host`` loses
      both tokens), the query (``?private_token=...``, ``?access_token=...``: a git remote
      needs none) and the fragment are dropped. An ``ssh://`` user without a password is an
      account name and is kept (``ssh://git@host/r.git``).
    - scp-like remotes (``git@github.com:o/r.git``) and local paths are kept as they are; a
      password in an scp-like userinfo (``user:pw@host:path``) is dropped with its user.
    """
    match = _SCHEME.match(url)
    if match is None:
        return _strip_scp_like(url)
    scheme = match.group("scheme")
    rest = url[match.end() :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, at, host = authority.rpartition("@")
    if at:
        keep_user = scheme.lower() in _SSH_SCHEMES and ":" not in userinfo and userinfo
        authority = f"{userinfo}@{host}" if keep_user else host
    path = re.split(r"[?#]", tail, maxsplit=1)[0]
    return f"{scheme}://{authority}{path}"


def _strip_scp_like(url: str) -> str:
    head, slash, tail = url.partition("/")
    userinfo, at, host = head.rpartition("@")
    if at and ":" in userinfo:
        return host + slash + tail
    return url


@dataclass(frozen=True)
class ManifestProvenance:
    """What git says about one manifest at apply time."""

    manifest_path: str
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def dirty(self) -> bool:
        return bool(self.facts.get("dirty"))


@dataclass(frozen=True)
class RepoFacts:
    """Repository-wide facts, gathered once per apply."""

    head_commit: str | None
    branch: str | None
    remote_url: str | None
    worktree_dirty: bool
    applied_by: str
    applied_at: str


def _versions() -> dict[str, str]:
    from himl_manifest import __version__
    from himl_manifest.manifest.schema import schema_version

    return {"tool_version": __version__, "schema_version": schema_version()}


def _applied_at() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _user(reader: Any) -> str:
    try:
        email = reader.get_value("user", "email", default="")
    except Exception:  # a broken git config is no reason to fail an apply
        email = ""
    if email:
        return str(email)
    try:
        return os.environ.get("USER") or getpass.getuser()
    except Exception:
        return "unknown"


class GitProvenance:
    """Provenance of the manifests of one repository (or of none, outside git)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.repo: Any = None
        try:
            import git

            self.repo = git.Repo(self.root, search_parent_directories=True)
        except Exception:  # not a repository, or git missing: provenance says so
            self.repo = None
        self.repo_root = Path(self.repo.working_tree_dir).resolve() if self.repo else self.root

    def repo_facts(self) -> RepoFacts:
        if self.repo is None:
            return RepoFacts(None, None, None, True, _user(_NoConfig()), _applied_at())
        repo = self.repo
        try:
            head = repo.head.commit.hexsha
        except ValueError:  # no commit yet
            head = None
        if repo.head.is_detached:
            branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME")
        else:
            branch = repo.active_branch.name
        remote = None
        remotes = {r.name: r for r in repo.remotes}
        chosen = remotes.get("origin") or next(iter(remotes.values()), None)
        if chosen is not None:
            urls = list(chosen.urls)
            remote = strip_credentials(urls[0]) if urls else None
        dirty = repo.is_dirty(untracked_files=False)
        return RepoFacts(head, branch, remote, dirty, _user(repo.config_reader()), _applied_at())

    def _relative(self, manifest_path: str) -> str:
        path = Path(manifest_path)
        absolute = path if path.is_absolute() else self.root / path
        try:
            return absolute.resolve().relative_to(self.repo_root).as_posix()
        except ValueError:
            return manifest_path

    def manifest(self, manifest_path: str, repo: RepoFacts) -> ManifestProvenance:
        """Provenance of one manifest (a path relative to the project root)."""
        base: dict[str, Any] = {
            "manifest_path": manifest_path,
            "head_commit": repo.head_commit,
            "branch": repo.branch,
            "remote_url": repo.remote_url,
            "worktree_dirty": repo.worktree_dirty,
            "applied_by": repo.applied_by,
            "applied_at": repo.applied_at,
            **_versions(),
        }
        if self.repo is None:
            return ManifestProvenance(manifest_path, {**base, "dirty": True, "tracked": False})
        relative = self._relative(manifest_path)
        tracked = self._tracked(relative)
        commit = None
        if tracked and repo.head_commit:
            found = next(iter(self.repo.iter_commits(paths=relative, max_count=1)), None)
            commit = found.hexsha if found is not None else None
        absolute = self.repo_root / relative
        blob = self.repo.git.hash_object(str(absolute)) if absolute.is_file() else None
        dirty = not tracked or bool(self.repo.git.status("--porcelain", "--", relative).strip())
        facts = {
            **base,
            "manifest_commit": commit,
            "manifest_blob": blob,
            "dirty": dirty,
            "tracked": tracked,
        }
        return ManifestProvenance(manifest_path, facts)

    def _tracked(self, relative: str) -> bool:
        if self.repo is None:
            return False
        try:
            return bool(self.repo.git.ls_files("--error-unmatch", "--", relative))
        except Exception:
            return False

    def show(self, commit: str, manifest_path: str) -> str | None:
        """The manifest's content at ``commit`` (``git show <commit>:<path>``), if there."""
        if self.repo is None:
            return None
        try:
            return str(self.repo.git.show(f"{commit}:{self._relative(manifest_path)}"))
        except Exception:
            return None

    def resolve_commit(self, prefix: str) -> str | None:
        """The full sha of a commit prefix, or None when git does not know it."""
        if self.repo is None:
            return None
        try:
            return str(self.repo.git.rev_parse("--verify", "--quiet", f"{prefix}^{{commit}}"))
        except Exception:
            return None


class _NoConfig:
    def get_value(self, section: str, option: str, default: str = "") -> str:
        return default


def gather(root: Path, manifest_paths: Iterable[str]) -> dict[str, ManifestProvenance]:
    """Provenance of each manifest path (relative to ``root``), gathered in one pass."""
    provenance = GitProvenance(root)
    repo = provenance.repo_facts()
    return {path: provenance.manifest(path, repo) for path in sorted(set(manifest_paths))}


def refuse_dirty(found: dict[str, ManifestProvenance]) -> None:
    """ConfigError naming every manifest with uncommitted changes (or not tracked by git)."""
    dirty = [p for p in found.values() if p.dirty]
    if not dirty:
        return
    lines = []
    for item in dirty:
        why = "not committed" if not item.facts.get("tracked") else "uncommitted changes"
        lines.append(f"  {item.manifest_path}: {why}")
    raise ConfigError(
        "refusing to apply manifests that are not committed (every run records the commit "
        "that produced it):\n" + "\n".join(lines) + "\ncommit them, or pass --allow-dirty "
        "(recorded on the runs as dirty=true)"
    )
