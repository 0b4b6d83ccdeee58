"""Git provenance of applied manifests (GitPython), stamped on every run apply submits.

For each manifest: the commit that last changed it, its blob sha (of the file as applied), HEAD,
branch, the remote URL with credentials stripped, whether the manifest and the work tree are
dirty, who applied and from where (a CI run's link), when, and the tool and schema versions.
The keys become ``himl.provenance.<key>`` tags in the run store (see ``docs/store.md``).

Shallow clones (CI's default checkout): the history stops at the clone's boundary commits,
where every file looks added, so "the commit that last changed the manifest" found there may be
wrong. It is recorded only when provably right (the manifest changed in a commit above the
boundary); otherwise apply first tries to fetch the full history (bounded by
``HIML_DEEPEN_TIMEOUT`` seconds, default 60; 0 never fetches), and if that fails records the
commit as unknown, with the reason (``manifest_commit_unknown``), never HEAD in its place.

Who applied: ``HIML_APPLIED_BY``, else the CI system's actor (GitHub Actions
``GITHUB_ACTOR``, GitLab ``GITLAB_USER_LOGIN``, Azure Pipelines ``BUILD_REQUESTEDFOREMAIL`` /
``BUILD_REQUESTEDFOR``), else git ``user.email``, ``user.name``, else ``$USER``; the fact
``applied_by_source`` says which.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from himl_manifest.errors import ConfigError
from himl_manifest.records import strip_credentials

#: Environment variables naming who applied, first found wins: an explicit override, then the
#: actor of a CI run (GitHub Actions, GitLab CI, Azure Pipelines).
APPLIED_BY_VARIABLES = (
    "HIML_APPLIED_BY",
    "GITHUB_ACTOR",
    "GITLAB_USER_LOGIN",
    "BUILD_REQUESTEDFOREMAIL",
    "BUILD_REQUESTEDFOR",
)
#: Seconds apply may spend fetching the full history of a shallow clone (0: never fetch).
DEEPEN_TIMEOUT_ENV = "HIML_DEEPEN_TIMEOUT"
DEFAULT_DEEPEN_TIMEOUT_S = 60.0
#: Why a manifest's commit is unknown in a shallow clone (``manifest_commit_unknown``).
SHALLOW_UNKNOWN = (
    "shallow clone: the manifest's last change is older than the clone's history "
    "(check out with fetch-depth: 0)"
)

Warn = Callable[[str], None]


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
    applied_by_source: str = ""
    #: Link to the CI run that applied (GitHub Actions, GitLab CI, Azure Pipelines), if any.
    ci_run_url: str | None = None
    #: Whether the repository is a shallow clone (its history stops at boundary commits).
    shallow: bool = False


def _versions() -> dict[str, str]:
    from himl_manifest import __version__
    from himl_manifest.manifest.schema import schema_version

    return {"tool_version": __version__, "schema_version": schema_version()}


def _applied_at() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def applied_by(reader: Any, environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Who applied, and where that came from: the first of :data:`APPLIED_BY_VARIABLES` that
    is set, else git ``user.email``, else ``user.name``, else ``$USER``."""
    env = os.environ if environ is None else environ
    for name in APPLIED_BY_VARIABLES:
        value = env.get(name, "").strip()
        if value:
            return value, name
    for option in ("email", "name"):
        try:
            value = str(reader.get_value("user", option, default="") or "").strip()
        except Exception:  # a broken git config is no reason to fail an apply
            value = ""
        if value:
            return value, f"git user.{option}"
    try:
        return env.get("USER") or getpass.getuser(), "USER"
    except Exception:
        return "unknown", ""


def ci_run_url(environ: Mapping[str, str] | None = None) -> str | None:
    """The web page of the CI run this process belongs to, when a known CI system says."""
    env = os.environ if environ is None else environ
    server, repository, run_id = (
        env.get("GITHUB_SERVER_URL"),
        env.get("GITHUB_REPOSITORY"),
        env.get("GITHUB_RUN_ID"),
    )
    if server and repository and run_id:
        attempt = env.get("GITHUB_RUN_ATTEMPT")
        suffix = f"/attempts/{attempt}" if attempt else ""
        return f"{server.rstrip('/')}/{repository}/actions/runs/{run_id}{suffix}"
    if env.get("CI_JOB_URL"):
        return env["CI_JOB_URL"]
    collection, project, build = (
        env.get("SYSTEM_COLLECTIONURI"),
        env.get("SYSTEM_TEAMPROJECT"),
        env.get("BUILD_BUILDID"),
    )
    if collection and project and build:
        return f"{collection.rstrip('/')}/{project}/_build/results?buildId={build}"
    return None


def deepen_timeout(environ: Mapping[str, str] | None = None) -> float:
    """``$HIML_DEEPEN_TIMEOUT`` in seconds (default 60; 0 or less: never fetch)."""
    env = os.environ if environ is None else environ
    text = env.get(DEEPEN_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_DEEPEN_TIMEOUT_S
    try:
        return float(text)
    except ValueError as exc:
        raise ConfigError(
            f"{DEEPEN_TIMEOUT_ENV}={text!r}: not a number of seconds (0 never fetches)"
        ) from exc


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
        self._boundary: frozenset[str] | None = None

    def repo_facts(self) -> RepoFacts:
        if self.repo is None:
            who, source = applied_by(_NoConfig())
            return RepoFacts(
                None, None, None, True, who, _applied_at(), source, ci_run_url(), False
            )
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
        chosen = self._remote()
        if chosen is not None:
            urls = list(chosen.urls)
            remote = strip_credentials(urls[0]) if urls else None
        dirty = repo.is_dirty(untracked_files=False)
        who, source = applied_by(repo.config_reader())
        return RepoFacts(
            head, branch, remote, dirty, who, _applied_at(), source, ci_run_url(), self.shallow
        )

    def _remote(self) -> Any:
        remotes = {r.name: r for r in self.repo.remotes} if self.repo is not None else {}
        return remotes.get("origin") or next(iter(remotes.values()), None)

    # --- shallow clones ---------------------------------------------------------------------

    @property
    def shallow(self) -> bool:
        """Whether the repository is a shallow clone (``git rev-parse --is-shallow-repository``)."""
        return bool(self.boundary())

    def boundary(self) -> frozenset[str]:
        """The shallow clone's boundary commits (empty for a complete repository): commits
        whose parents the clone does not have, so every file looks added in them."""
        if self._boundary is None:
            self._boundary = frozenset()
            if self.repo is not None:
                try:
                    shallow = self.repo.git.rev_parse("--is-shallow-repository") == "true"
                    if shallow:
                        path = Path(self.repo.common_dir) / "shallow"
                        self._boundary = frozenset(path.read_text(encoding="ascii").split())
                except Exception:  # an old git: no way to tell; treat it as complete
                    self._boundary = frozenset()
        return self._boundary

    def deepen(self, timeout_s: float) -> str | None:
        """Fetch the full history of a shallow clone (``git fetch --unshallow``) within
        ``timeout_s`` seconds, never asking for credentials; None when it worked, else why
        not. The repository's boundary is read again afterwards."""
        remote = self._remote()
        if remote is None:
            return "the repository has no remote to fetch the history from"
        command = ["git", "fetch", "--quiet", "--unshallow", str(remote.name)]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"}
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                command,
                cwd=self.repo_root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                start_new_session=True,  # so a timeout stops git's helpers (ssh, https) too
            )
            try:
                code = process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _stop_group(process)
                return f"`{' '.join(command)}` did not finish in {timeout_s:g} s"
            errors.seek(0)
            message = errors.read().decode("utf-8", "replace").strip()
        self._boundary = None
        if code != 0:
            last = message.splitlines()[-1] if message else f"exit code {code}"
            return f"`{' '.join(command)}` failed: {last}"
        return None

    # --- manifests --------------------------------------------------------------------------

    def _relative(self, manifest_path: str) -> str:
        path = Path(manifest_path)
        absolute = path if path.is_absolute() else self.root / path
        try:
            return absolute.resolve().relative_to(self.repo_root).as_posix()
        except ValueError:
            return manifest_path

    def last_change(self, manifest_path: str) -> tuple[str | None, str | None]:
        """``(commit that last changed the manifest, None)``, or ``(None, why unknown)``: in a
        shallow clone a change found at a boundary commit is not provably the last one."""
        if self.repo is None:
            return None, "not a git repository"
        relative = self._relative(manifest_path)
        try:
            found = next(iter(self.repo.iter_commits(paths=relative, max_count=1)), None)
        except Exception:  # no commit yet
            found = None
        if found is None:
            return None, "no commit holds the manifest"
        if found.hexsha in self.boundary():
            return None, SHALLOW_UNKNOWN
        return str(found.hexsha), None

    @staticmethod
    def repository(repo: RepoFacts) -> dict[str, Any]:
        """The facts of a run that hold for the whole repository (and the tool's versions): what
        a manifest's provenance starts from, and all an imperative run (no manifest) has."""
        return {
            "head_commit": repo.head_commit,
            "branch": repo.branch,
            "remote_url": repo.remote_url,
            "worktree_dirty": repo.worktree_dirty,
            "applied_by": repo.applied_by,
            "applied_by_source": repo.applied_by_source or None,
            "applied_at": repo.applied_at,
            "ci_run_url": repo.ci_run_url,
            "shallow": repo.shallow,
            **_versions(),
        }

    def manifest(self, manifest_path: str, repo: RepoFacts) -> ManifestProvenance:
        """Provenance of one manifest (a path relative to the project root)."""
        base: dict[str, Any] = {"manifest_path": manifest_path, **self.repository(repo)}
        if self.repo is None:
            return ManifestProvenance(manifest_path, {**base, "dirty": True, "tracked": False})
        relative = self._relative(manifest_path)
        tracked = self._tracked(relative)
        commit, unknown = None, None
        if tracked and repo.head_commit:
            commit, unknown = self.last_change(manifest_path)
        absolute = self.repo_root / relative
        blob = self.repo.git.hash_object(str(absolute)) if absolute.is_file() else None
        dirty = not tracked or bool(self.repo.git.status("--porcelain", "--", relative).strip())
        facts = {
            **base,
            "manifest_commit": commit,
            "manifest_commit_unknown": unknown,
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


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop a process started in its own session, and everything it started."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


class _NoConfig:
    def get_value(self, section: str, option: str, default: str = "") -> str:
        return default


def gather(
    root: Path, manifest_paths: Iterable[str], warn: Warn | None = None
) -> dict[str, ManifestProvenance]:
    """Provenance of each manifest path (relative to ``root``), gathered in one pass.

    In a shallow clone where some manifest's last change is not provably in the clone's
    history, the full history is fetched first (bounded: :func:`deepen_timeout`); ``warn``
    is called once with what happened when that was tried, or when some commit stays
    unknown."""
    provenance = GitProvenance(root)
    paths = sorted(set(manifest_paths))
    if provenance.shallow and paths:
        _deepen_if_needed(provenance, paths, warn or (lambda _message: None))
    repo = provenance.repo_facts()
    return {path: provenance.manifest(path, repo) for path in paths}


def _deepen_if_needed(provenance: GitProvenance, paths: list[str], warn: Warn) -> None:
    unknown = [p for p in paths if provenance.last_change(p)[1] == SHALLOW_UNKNOWN]
    if not unknown:
        return  # every manifest changed above the boundary: provably right as it is
    timeout_s = deepen_timeout()
    if timeout_s > 0:
        failure = provenance.deepen(timeout_s)
        if failure is None:
            warn(
                "shallow clone: fetched its full history (git fetch --unshallow) to find the "
                "commits that last changed the manifests; in CI, check out with "
                "fetch-depth: 0 to skip this"
            )
            return
        why = f"fetching the full history failed: {failure}"
    else:
        why = f"{DEEPEN_TIMEOUT_ENV}=0: the history was not fetched"
    still = [p for p in paths if provenance.last_change(p)[1] == SHALLOW_UNKNOWN]
    if still:
        warn(
            f"shallow clone ({why}): the commit that last changed {', '.join(still)} is not in "
            "the clone's history and is recorded as unknown (manifest_commit_unknown), so "
            "`himl audit --commit` finds these runs by HEAD only; check out with "
            "fetch-depth: 0 (actions/checkout) to record it"
        )


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
