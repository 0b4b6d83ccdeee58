"""Where a run came from, as MLflow's own source tags (its UI shows the commit natively): the
provenance apply stamped on a managed run, else what git says about the project (a one-off
`himl-runner` run). The runner asks ``git`` itself, not GitPython: a job stays light."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from himl_manifest import paths
from himl_manifest.model import Provenance
from himl_manifest.records import source_tags


def git_facts(root: Path) -> dict[str, str | None]:
    """What git says about ``root`` (``git`` itself, no GitPython: the runner stays light):
    HEAD commit, branch (None when detached) and the remote URL (``origin``, else the first
    remote), each None when git cannot say (no repository, no git)."""
    import subprocess

    def ask(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(root), *args],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        answer = done.stdout.strip()
        return answer if done.returncode == 0 and answer else None

    commit = ask("rev-parse", "--verify", "-q", "HEAD")
    if commit is None:
        return {"head_commit": None, "branch": None, "remote_url": None}
    branch = ask("symbolic-ref", "-q", "--short", "HEAD")
    remotes = (ask("remote") or "").split()
    chosen = "origin" if "origin" in remotes else (remotes[0] if remotes else None)
    remote = ask("remote", "get-url", chosen) if chosen else None
    return {"head_commit": commit, "branch": branch, "remote_url": remote}


def run_source_tags(
    spec: Mapping[str, Any], command: str, root: Path | None = None
) -> dict[str, str]:
    """MLflow's source tags of the run: from the provenance apply stamped on a managed run's
    spec (``spec``: the RunSpec JSON as a dict), else what git says about the project (a
    one-off run; ``command`` names its source)."""
    recorded = spec.get("provenance") or {}
    if recorded:
        facts = Provenance.of(recorded)
        source = str(spec.get("manifest_path") or spec.get("run_name") or command)
    else:
        facts = Provenance.of(git_facts(root or paths.project_root()))
        source = command
    return source_tags(
        source=source,
        commit=facts.head_commit,
        branch=facts.branch,
        remote_url=facts.remote_url,
    )
