"""The whole story against the loopback Azure ML workspace, in-process through the operations
layer (``make_plan`` + ``operations.apply.apply``) in a real git repository, with manifests whose
``compute.target`` is a cluster:

create -> no changes once the jobs completed -> add a seed (one create) -> raise max_epochs
(resume: new jobs with ``resume_from``, the old ones superseded) -> edit the description (update
in place, no new job) -> change a param (replace) -> delete the manifest (orphans) -> --prune
(archived, never deleted). Each step is checked on the server's jobs themselves.
"""

from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from server import TERMINAL, FakeWorkspace, backend_of

from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.model import ActionKind
from himl_manifest.operations.apply import apply
from himl_manifest.operations.plan import make_plan
from himl_manifest.plan.model import Plan

CLUSTER = "gpu-cluster"
IMAGE = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def init_repo(repo: Path) -> Path:
    """A real git repository with experiments/ and the conda file the jobs are built from."""
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "researcher@example.org")
    git(repo, "config", "user.name", "Researcher")
    (repo / ".gitignore").write_text("outputs/\nmlflow.db\n.himl/\n", encoding="utf-8")
    (repo / "experiments").mkdir()
    return repo


def commit(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def write_manifest(repo: Path, name: str = "hello", **fields: Any) -> Path:
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": name,
        "container": "HelloWorld",
        "seeds": [0],
        "trainer": {"max_epochs": 1},
        "compute": {"target": CLUSTER},
        "environment": {"image": IMAGE},
        **fields,
    }
    path = repo / "experiments" / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def plan_of(repo: Path, backend: AzureMLBackend) -> Plan:
    return make_plan([repo / "experiments"], backend)


def kinds(plan: Plan) -> list[tuple[str, int | None]]:
    return sorted((str(a.kind), a.seed) for a in plan.actions)


def finish_all(workspace: FakeWorkspace) -> None:
    """Every unfinished job completes (the runner records its checkpoint, see runner_tags)."""
    for name, job in list(workspace.jobs.items()):
        if job["properties"]["status"] not in TERMINAL:
            workspace.finish(name, "Completed")


def props(job: dict[str, Any]) -> dict[str, str]:
    return dict(job["properties"]["properties"])


def tags(job: dict[str, Any]) -> dict[str, str]:
    return dict(job["properties"]["tags"])


def live(workspace: FakeWorkspace) -> dict[int, dict[str, Any]]:
    """The active jobs by seed (one each)."""
    found = [j for j in workspace.jobs.values() if tags(j).get("himl.state") == "active"]
    by_seed = {int(props(j)["himl.seed"]): j for j in found}
    assert len(by_seed) == len(found), "two active jobs for one seed"
    return by_seed


@pytest.fixture
def gitrepo(tmp_path: Path) -> Path:
    return init_repo(tmp_path / "repo")


@pytest.fixture
def azure(workspace: FakeWorkspace, gitrepo: Path) -> AzureMLBackend:
    backend: AzureMLBackend = backend_of(workspace, gitrepo)  # writes environment.yml
    return backend


def test_the_gitops_loop_on_azure_ml(
    gitrepo: Path, workspace: FakeWorkspace, azure: AzureMLBackend
) -> None:
    repo = gitrepo

    # 1. two seeds: two jobs, named after their runs, identity in properties, state in tags
    write_manifest(repo, seeds=[0, 1], description="first")
    first = commit(repo, "hello: two seeds")
    plan = plan_of(repo, azure)
    assert kinds(plan) == [("create", 0), ("create", 1)]
    result = apply(plan, azure, root=repo)
    assert result.ok and result.count(ActionKind.CREATE) == 2
    assert not result.waited  # apply returns once Azure ML accepted the jobs
    assert len(workspace.jobs) == 2 and len(workspace.created) == 2
    desired = {a.run_name: a.run for a in plan.actions if a.run is not None}
    assert set(workspace.jobs) == set(desired)
    for name, job in workspace.jobs.items():
        run = desired[name]
        assert run is not None
        p = props(job)
        assert p["himl.managed"] == "true"
        assert p["himl.run_name"] == name
        assert p["himl.spec_hash"] == run.spec_hash
        assert p["himl.attempt"] == "1"
        assert p["himl.experiment"] == "hello"
        assert p["himl.manifest_path"].endswith("experiments/hello.yaml")
        assert p["himl.provenance.manifest_commit"] == first
        assert tags(job)["himl.state"] == "active"
        assert job["properties"]["computeId"].endswith(f"/computes/{CLUSTER}")
        assert job["properties"]["description"] == "first"

    # while the jobs run, the plan waits; once they completed: no changes
    assert {str(a.kind) for a in plan_of(repo, azure).actions} == {"wait"}
    finish_all(workspace)
    again = plan_of(repo, azure)
    assert kinds(again) == [("keep", 0), ("keep", 1)]
    assert apply(again, azure, root=repo).summary_line() == "No changes."
    assert len(workspace.created) == 2

    # 2. add a seed: exactly one create
    write_manifest(repo, seeds=[0, 1, 2], description="first")
    commit(repo, "hello: a third seed")
    plan = plan_of(repo, azure)
    assert kinds(plan) == [("create", 2), ("keep", 0), ("keep", 1)]
    apply(plan, azure, root=repo)
    assert len(workspace.jobs) == 3
    (new,) = set(workspace.created[2:])
    assert props(workspace.jobs[new])["himl.seed"] == "2"
    finish_all(workspace)
    before = dict(live(workspace))

    # 3. raise max_epochs: every seed resumes (new job, resume_from the old run), old superseded
    write_manifest(repo, seeds=[0, 1, 2], description="first", trainer={"max_epochs": 2})
    commit(repo, "hello: two epochs")
    plan = plan_of(repo, azure)
    assert kinds(plan) == [("resume", 0), ("resume", 1), ("resume", 2)]
    result = apply(plan, azure, root=repo)
    assert result.ok and result.count(ActionKind.RESUME) == 3
    assert len(workspace.jobs) == 6
    resumed = live(workspace)
    for seed, old in before.items():
        job = resumed[seed]
        assert job["name"] != old["name"]
        assert props(job)["himl.resume_from"] == old["name"]
        assert tags(workspace.jobs[old["name"]])["himl.state"] == "superseded"
        checkpoint = job["properties"]["inputs"]["checkpoint"]["uri"]
        assert f"azureml://jobs/{old['name']}/outputs/" in checkpoint
    finish_all(workspace)
    assert {str(a.kind) for a in plan_of(repo, azure).actions} == {"keep"}

    # 4. edit the description: updated in place, no new job
    write_manifest(repo, seeds=[0, 1, 2], description="second", trainer={"max_epochs": 2})
    commit(repo, "hello: better words")
    plan = plan_of(repo, azure)
    assert kinds(plan) == [("update", 0), ("update", 1), ("update", 2)]
    result = apply(plan, azure, root=repo)
    assert result.count(ActionKind.UPDATE) == 3
    assert len(workspace.jobs) == 6 and len(workspace.created) == 6
    for seed, job in live(workspace).items():
        assert job["name"] == resumed[seed]["name"]
        assert job["properties"]["description"] == "second"
        assert tags(job)["himl.cosmetic"] == "job:description"  # read from the job itself
        submitted = job["properties"]["environmentVariables"]["HIML_RUN_SPEC"]
        assert '"description":"first"' in submitted  # the definition never changes
    assert {str(a.kind) for a in plan_of(repo, azure).actions} == {"keep"}

    # 5. change a param: replace (new jobs, no resume_from), the old ones superseded
    write_manifest(
        repo,
        seeds=[0, 1, 2],
        description="second",
        trainer={"max_epochs": 2},
        params={"learning_rate": 0.01},
    )
    commit(repo, "hello: a new learning rate")
    plan = plan_of(repo, azure)
    assert kinds(plan) == [("replace", 0), ("replace", 1), ("replace", 2)]
    result = apply(plan, azure, root=repo)
    assert result.ok and result.count(ActionKind.REPLACE) == 3
    assert len(workspace.jobs) == 9
    replaced = live(workspace)
    for seed, job in replaced.items():
        assert "himl.resume_from" not in props(job)
        assert tags(workspace.jobs[resumed[seed]["name"]])["himl.state"] == "superseded"
    finish_all(workspace)
    assert {str(a.kind) for a in plan_of(repo, azure).actions} == {"keep"}

    # 6. delete the manifest: orphans, left alone without --prune
    (repo / "experiments" / "hello.yaml").unlink()
    commit(repo, "hello: retired")
    plan = plan_of(repo, azure)
    assert kinds(plan) == [("orphan", 0), ("orphan", 1), ("orphan", 2)]
    result = apply(plan, azure, root=repo)
    assert result.orphans_left == 3
    assert all(tags(j)["himl.state"] == "active" for j in replaced.values())

    # 7. --prune: archived, never deleted: the server still has every job
    result = apply(plan, azure, root=repo, prune=True)
    assert result.count(ActionKind.ORPHAN) == 3
    assert len(workspace.jobs) == 9
    for job in replaced.values():
        stored = workspace.jobs[job["name"]]
        assert stored["properties"]["isArchived"] is True
        assert tags(stored)["himl.state"] == "archived"
    states = Counter(tags(j)["himl.state"] for j in workspace.jobs.values())
    assert states == {"superseded": 6, "archived": 3}
    assert not workspace.calls("DELETE", ".")
    assert plan_of(repo, azure).actions == ()

    # never a duplicate: every job was created once, by name
    assert len(workspace.created) == len(set(workspace.created)) == 9
    assert not workspace.unknown
