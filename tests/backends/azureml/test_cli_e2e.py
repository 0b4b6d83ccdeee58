"""The Azure ML path as a user meets it: the real CLI in subprocesses, in a user's own
repository, against the loopback workspace with its blob storage in Azurite.

The repository has a ``config.json``, its own container package, a conda file that includes a
requirements file with pip's ``-r``, a local experiment (it trains here, for real), a cluster
experiment with three seeds, and a two-node fine-tune from the cluster experiment's checkpoint
reading data in every way a manifest can name it (an unversioned asset, a versioned one, a
datastore path with a mountpoint, mounted and downloaded). The credential comes from
azure-identity's own default chain: ``AZURE_TOKEN_CREDENTIALS=AzureCliCredential`` and a
stand-in ``az`` on ``PATH``, the path a user's ``az login`` takes.

validate -> plan -> apply (the code uploaded into Azurite, the fine-tune deferred behind its
upstream) -> the service moves the jobs -> apply (the fine-tune submitted) -> resume, add a
seed, update in place, replace, orphan, prune -> "No changes." The jobs, the blobs and the
tokens asked for are checked on the stand-ins themselves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from server import SUBSCRIPTION, TERMINAL, FakeWorkspace, runner_tags

CLUSTER = "gpu-cluster"
CONTAINER = '''"""The user's own container: HelloWorld's model and data under the user's name."""
from himl_manifest.configs.hello_world import HelloWorld


class Regression(HelloWorld):
    """A one-layer regression, for the tests."""
'''
AZ = """#!{python}
import json, os, sys, time
with open(os.environ["HIML_TEST_AZ_LOG"], "a", encoding="utf-8") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
expires = int(time.time()) + 3600
print(json.dumps({{
    "accessToken": "token-from-az", "expires_on": expires,
    "expiresOn": time.strftime("%Y-%m-%d %H:%M:%S.000000", time.localtime(expires)),
    "subscription": "{subscription}", "tenant": "tenant", "tokenType": "Bearer",
}}))
"""
CONDA = """name: user-env
dependencies:
  - python=3.11
  - pip
  - pip:
      - -r requirements.txt
"""
TINY = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1, "accelerator": "cpu"}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


def manifest(repo: Path, name: str, **fields: Any) -> None:
    document = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": name,
        "container": "mypkg.Regression",
        **fields,
    }
    (repo / "experiments" / f"{name}.yaml").write_text(
        yaml.safe_dump(document, sort_keys=False), encoding="utf-8"
    )


def pretrain(**fields: Any) -> dict[str, Any]:
    return {
        "seeds": 3,
        "trainer": {"max_epochs": 2, "devices": 1},
        "compute": {"target": CLUSTER},
        **fields,
    }


FINETUNE: dict[str, Any] = {
    "seeds": [0],
    "trainer": {"max_epochs": 1, "devices": 1},
    "checkpoint": {"source": {"experiment": "pretrain", "seed": 0}},
    "datasets": [
        {"azure": "tiles"},
        {"azure": "panda:3", "mode": "download"},
        {"datastore": "workspaceblobstore", "path": "datasets/extra", "mountpoint": "/mnt/extra"},
    ],
    "compute": {"target": CLUSTER, "num_nodes": 2, "max_run_duration": "2h"},
}


@pytest.fixture
def user_repo(tmp_path: Path, empty_store: Path) -> Path:
    repo = tmp_path / "lab"
    (repo / "experiments").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "researcher@example.org")
    git(repo, "config", "user.name", "Researcher")
    (repo / "mypkg").mkdir()
    (repo / "mypkg" / "__init__.py").write_text("from mypkg.models import Regression\n")
    (repo / "mypkg" / "models.py").write_text(CONTAINER, encoding="utf-8")
    (repo / "environment.yml").write_text(CONDA, encoding="utf-8")
    (repo / "requirements.txt").write_text("himl-manifest[azure]\nazureml-mlflow\n")
    (repo / ".gitignore").write_text("outputs/\n", encoding="utf-8")  # not the store: we skip it
    (repo / "config.json").write_text(
        json.dumps(
            {
                "subscription_id": SUBSCRIPTION,
                "resource_group": "test-rg",
                "workspace_name": "test-ws",
            }
        )
    )
    manifest(repo, "local", seeds=[0], trainer=TINY)
    manifest(repo, "pretrain", **pretrain())
    manifest(repo, "finetune", **FINETUNE)
    shutil.copy(empty_store, repo / "mlflow.db")
    commit(repo, "a lab")
    return repo


@pytest.fixture
def service(tmp_path: Path, azurite: Any) -> Iterator[FakeWorkspace]:
    workspace = FakeWorkspace(tmp_path, storage=azurite, on_finish=runner_tags)
    workspace.add_data("tiles", ["1", "2"])
    workspace.add_data("panda", ["3"])
    yield workspace
    workspace.close()


@pytest.fixture
def env(tmp_path: Path, user_repo: Path, service: FakeWorkspace) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(AZ.format(python=sys.executable, subscription=SUBSCRIPTION), encoding="utf-8")
    az.chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AZUREML_"))}
    return {
        **keep,
        "PATH": f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{keep['PATH']}",
        "AZURE_TOKEN_CREDENTIALS": "AzureCliCredential",
        "AZUREML_DEV_URL_MFE": service.url,
        "REQUESTS_CA_BUNDLE": str(service.cert_file),
        "HIML_TEST_AZ_LOG": str(tmp_path / "az.log"),
        "HIML_AZUREML_TIMEOUT": "20",
        "MLFLOW_TRACKING_URI": f"sqlite:///{user_repo / 'mlflow.db'}",
    }


def himl(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "himl_manifest.cli.main", *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    return done.stdout + done.stderr


def tokens_asked(env: dict[str, str]) -> int:
    log = Path(env["HIML_TEST_AZ_LOG"])
    count = len(log.read_text().splitlines()) if log.exists() else 0
    log.unlink(missing_ok=True)
    return count


def finish_all(service: FakeWorkspace) -> None:
    for name, job in list(service.jobs.items()):
        if job["properties"]["status"] not in TERMINAL:
            service.finish(name, "Completed")


def active(service: FakeWorkspace, experiment: str) -> list[dict[str, Any]]:
    return [
        job
        for job in service.jobs.values()
        if job["properties"]["properties"].get("himl.experiment") == experiment
        and job["properties"]["tags"].get("himl.state") == "active"
    ]


def test_the_user_loop_through_the_cli(
    user_repo: Path, env: dict[str, str], service: FakeWorkspace
) -> None:
    repo = user_repo

    # validate, then plan: 1 local + 3 cluster + 1 fine-tune that waits for its upstream
    assert "3 files valid" in ok(himl(repo, env, "validate", "experiments"))
    planned = ok(himl(repo, env, "plan", "--no-color"))
    assert "Plan: 5 to create." in planned
    assert "waits for pretrain-s0-" in planned
    tokens_asked(env)

    # apply: the local run trains here; the cluster jobs are submitted with the code uploaded
    # once; the fine-tune is deferred (its upstream's checkpoint does not exist yet)
    applied = ok(himl(repo, env, "apply", "--yes"))
    assert "finetune-s0-" in applied and "deferred: waits for pretrain-s0-" in applied
    assert "1 deferred" in applied and "3 submitted" in applied
    assert 1 <= tokens_asked(env) <= 2  # one token per scope for the whole apply
    assert len(active(service, "pretrain")) == 3 and not active(service, "finetune")
    (upload,) = service.uploads
    uploaded = service.uploaded_files(upload.code_id)
    assert {"mypkg/models.py", "environment.yml", "experiments/pretrain.yaml"} <= set(uploaded)
    assert not {"mlflow.db", ".himl/store_id"} & set(uploaded)
    assert not any(name.startswith("outputs/") for name in uploaded)  # the .gitignore's
    assert len(service.calls("PUT", "/environments/")) == 1  # registered once for 3 jobs
    listed = himl(repo, env, "runs", "--format", "json")
    statuses = sorted(row["status"] for row in json.loads(listed.stdout)["runs"])
    assert statuses == ["completed", "queued", "queued", "queued"], listed.stderr

    # the service runs the jobs; the next apply submits the fine-tune, nothing else
    finish_all(service)
    applied = ok(himl(repo, env, "apply", "--yes"))
    assert "Apply complete: 1 created." in applied
    (finetune,) = active(service, "finetune")
    body = finetune["properties"]
    assert body["resources"]["instanceCount"] == 2
    assert body["distribution"]["distributionType"] == "PyTorch"
    assert body["inputs"]["checkpoint"]["uri"].startswith("azureml://jobs/pretrain-s0-")
    assert body["inputs"]["dataset_0"]["uri"].endswith("/data/tiles/versions/2")  # latest
    assert body["inputs"]["dataset_1"]["jobInputType"] == "uri_folder"
    assert "/mnt/extra" in body["environmentVariables"]["HIML_RUN_SPEC"]  # for the runner
    assert len(service.uploads) == 1, [  # unchanged code: nothing uploaded again
        sorted(set(service.uploaded_files(u.code_id)) ^ set(uploaded)) for u in service.uploads
    ]
    finish_all(service)
    assert "No changes." in ok(himl(repo, env, "plan", "--detailed-exitcode"))

    # resume: more epochs for pretrain (its runs continue; the fine-tune of seed 0 follows)
    manifest(repo, "pretrain", **pretrain(trainer={"max_epochs": 4, "devices": 1}))
    commit(repo, "more epochs")
    planned = ok(himl(repo, env, "plan", "--no-color"))
    assert "Plan: 1 to replace, 3 to resume, 1 unchanged." in planned
    ok(himl(repo, env, "apply", "--yes"))
    finish_all(service)
    ok(himl(repo, env, "apply", "--yes"))  # the fine-tune, now that its upstream completed
    finish_all(service)

    # add a seed: one create
    manifest(repo, "pretrain", **pretrain(seeds=4, trainer={"max_epochs": 4, "devices": 1}))
    commit(repo, "a fourth seed")
    assert "Apply complete: 1 created." in ok(himl(repo, env, "apply", "--yes"))
    finish_all(service)

    # update in place: a description and a tag; removing the tag later removes it from the jobs
    fields = pretrain(seeds=4, trainer={"max_epochs": 4, "devices": 1})
    manifest(repo, "pretrain", description="baseline", tags={"team": "vision"}, **fields)
    commit(repo, "describe")
    jobs_before = len(service.jobs)
    assert "Apply complete: 4 updated." in ok(himl(repo, env, "apply", "--yes"))
    assert len(service.jobs) == jobs_before
    assert all(
        j["properties"]["tags"]["himl.tag.team"] == "vision" for j in active(service, "pretrain")
    )
    manifest(repo, "pretrain", description="baseline", **fields)
    commit(repo, "untag")
    ok(himl(repo, env, "apply", "--yes"))
    assert not any("himl.tag.team" in j["properties"]["tags"] for j in active(service, "pretrain"))

    # replace: a param changes every pretrain run (and the fine-tune behind seed 0)
    manifest(repo, "pretrain", description="baseline", params={"learning_rate": 0.05}, **fields)
    commit(repo, "new learning rate")
    assert "Plan: 5 to replace, 1 unchanged." in ok(himl(repo, env, "plan", "--no-color"))
    ok(himl(repo, env, "apply", "--yes"))
    finish_all(service)
    ok(himl(repo, env, "apply", "--yes"))
    finish_all(service)

    # orphan and prune: the fine-tune's manifest goes; its jobs are archived, never deleted
    (repo / "experiments" / "finetune.yaml").unlink()
    commit(repo, "no fine-tune")
    assert "Plan: 1 orphaned, 5 unchanged." in ok(himl(repo, env, "plan", "--no-color"))
    jobs_before = len(service.jobs)
    assert "1 archived" in ok(himl(repo, env, "apply", "--yes", "--prune"))
    assert len(service.jobs) == jobs_before
    assert "No changes." in ok(himl(repo, env, "plan", "--detailed-exitcode"))


def test_the_smoke_test_script_for_real_workspaces_runs(
    tmp_path: Path, env: dict[str, str], service: FakeWorkspace, user_repo: Path
) -> None:
    """docs/azureml-smoke-test.sh, as a user with a workspace runs it, here against the
    stand-in (whose jobs complete as they are polled): the script itself is proved to work."""
    script = Path(__file__).resolve().parents[3] / "docs" / "azureml-smoke-test.sh"
    smoke_env = {
        **env,
        "HIML": str(Path(sys.executable).parent / "himl"),
        "HIML_AZUREML_POLL_S": "0",
        "TMPDIR": str(tmp_path),
    }
    smoke_env.pop("MLFLOW_TRACKING_URI")  # the script's repository has a store of its own
    done = subprocess.run(
        ["bash", str(script), CLUSTER, str(user_repo / "config.json")],
        env=smoke_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "smoke test passed" in out and "Traceback" not in out
    assert "Apply complete: 2 created. Runs: 2 completed." in out  # the fine-tune followed
    assert "No changes." in out and "2 archived" in out
    names = sorted(service.jobs)
    assert len(names) == 2 and names[0].startswith("smoke-finetune-s0-")
    assert all(job["properties"]["isArchived"] for job in service.jobs.values())
