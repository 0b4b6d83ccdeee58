"""The GitHub workflow `himl init` writes, read as data: the properties docs/gitops.md promises
(full history, fork safety, prune only when asked, OIDC only when configured, secrets only
where needed, current action versions, one plan comment found by the plan's own marker)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from himl_manifest import __version__
from himl_manifest.operations.init import scaffolds
from himl_manifest.plan.render import MARKDOWN_MARKER

#: Current major versions (checked 2026-11-28).
ACTIONS = {
    "actions/checkout": "v7",
    "actions/setup-python": "v7",
    "actions/github-script": "v9",
    "azure/login": "v3",
}
SAME_REPOSITORY = "github.event.pull_request.head.repo.full_name == github.repository"


@pytest.fixture(scope="module")
def text() -> str:
    (workflow,) = [s for s in scaffolds("https://example.org/x") if s.path.endswith("himl.yml")]
    return workflow.content


@pytest.fixture(scope="module")
def workflow(text: str) -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(text)
    return loaded


def steps(workflow: dict[Any, Any], job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow["jobs"][job]["steps"]
    return found


def uses(step: dict[str, Any]) -> str:
    return str(step.get("uses", "")).split("@")[0]


def test_triggers_are_pull_request_never_pull_request_target(workflow: dict[Any, Any]) -> None:
    triggers = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert set(triggers) == {"pull_request", "push", "schedule", "workflow_dispatch"}
    assert triggers["push"]["branches"] == ["main"]
    assert workflow["permissions"] == {"contents": "read"}


def test_every_action_is_at_its_current_major_version(text: str) -> None:
    used = re.findall(r"uses: ([\w./-]+)@(\S+)", text)
    assert used and {name for name, _ in used} == set(ACTIONS)
    assert all(ACTIONS[name] == version for name, version in used)


def test_every_checkout_fetches_the_whole_history(workflow: dict[Any, Any]) -> None:
    for job in workflow["jobs"]:
        (checkout,) = [s for s in steps(workflow, job) if uses(s) == "actions/checkout"]
        assert checkout["with"] == {"fetch-depth": 0, "persist-credentials": False}


def test_forks_never_reach_the_self_hosted_runner_secrets_or_azure(
    workflow: dict[Any, Any],
) -> None:
    plan = workflow["jobs"]["plan"]
    assert plan["if"] == "github.event_name == 'pull_request'"
    runs_on = plan["runs-on"]
    assert runs_on.startswith("${{ " + SAME_REPOSITORY + " && vars.HIML_RUNNER")
    assert runs_on.endswith("|| 'ubuntu-latest' }}")
    by_name = {s.get("name", uses(s)): s for s in steps(workflow, "plan")}
    assert SAME_REPOSITORY in by_name["Azure login (OIDC)"]["if"]
    posting = [s for s in steps(workflow, "plan") if uses(s) == "actions/github-script"]
    assert [s["if"] for s in posting] == [SAME_REPOSITORY]


def test_prune_only_behind_the_repository_variable(workflow: dict[Any, Any], text: str) -> None:
    (apply,) = [s for s in steps(workflow, "apply") if s.get("name") == "Apply"]
    assert apply["env"]["PRUNE"] == "${{ vars.HIML_PRUNE == 'true' && '--prune' || '' }}"
    assert "himl apply experiments/ --yes" in apply["run"] and "$PRUNE" in apply["run"]
    # the only other mentions are comments and the drift check's name
    for line in text.splitlines():
        if "--prune" in line and "HIML_PRUNE" not in line:
            assert line.lstrip().startswith(("#", "- name:")), line


def test_apply_runs_on_main_one_at_a_time_and_installs_training(
    workflow: dict[Any, Any],
) -> None:
    apply = workflow["jobs"]["apply"]
    assert apply["if"] == "github.event_name == 'push' && github.ref == 'refs/heads/main'"
    assert apply["concurrency"] == {"group": "himl-apply", "cancel-in-progress": False}
    assert apply["permissions"] == {"contents": "read", "id-token": "write"}
    (install,) = [s for s in steps(workflow, "apply") if "Install" in s.get("name", "")]
    assert "train" in install["env"]["EXTRAS"]
    assert "https://download.pytorch.org/whl/cpu" in install["env"]["TORCH_INDEX"]
    assert "himl-manifest[${EXTRAS}]==${HIML_VERSION}" in install["run"]
    assert workflow["env"]["HIML_VERSION"] == __version__


def test_store_and_outputs_live_outside_the_checkout(workflow: dict[Any, Any]) -> None:
    (store,) = [s for s in steps(workflow, "apply") if "outside the checkout" in s.get("name", "")]
    script = store["run"]
    assert 'ln -sfn "$state/outputs" outputs' in script
    assert "sqlite:///$state/mlflow.db" in script
    assert "outputs >> .git/info/exclude" in script  # the link leaves the tree clean
    names = [s.get("name", uses(s)) for s in steps(workflow, "apply")]
    assert names.index(store["name"]) < names.index("Apply")


def test_secrets_reach_only_the_run_store_step(workflow: dict[Any, Any], text: str) -> None:
    for job in workflow["jobs"]:
        for step in steps(workflow, job):
            mentioned = "secrets." in yaml.safe_dump(step)
            assert mentioned == step.get("name", "").startswith("Run store"), (job, step)
    for name in ("URI", "TOKEN", "USERNAME", "PASSWORD"):
        assert text.count(f"secrets.MLFLOW_TRACKING_{name} }}}}") == 3
    # the installs (third-party code) run before the secrets are exported
    for job in workflow["jobs"]:
        names = [s.get("name", "") for s in steps(workflow, job)]
        install = next(i for i, n in enumerate(names) if n.startswith("Install"))
        store = next(i for i, n in enumerate(names) if n.startswith("Run store"))
        assert install < store


def test_azure_login_by_oidc_only_when_configured(workflow: dict[Any, Any]) -> None:
    for job in workflow["jobs"]:
        (login,) = [s for s in steps(workflow, job) if uses(s) == "azure/login"]
        assert login["if"].startswith("vars.AZURE_CLIENT_ID != ''")
        assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
        assert workflow["jobs"][job]["permissions"]["id-token"] == "write"


def test_one_plan_comment_found_by_the_plans_own_marker(
    workflow: dict[Any, Any],
) -> None:
    (post,) = [s for s in steps(workflow, "plan") if uses(s) == "actions/github-script"]
    script = post["with"]["script"]
    assert f'const marker = "{MARKDOWN_MARKER}";' in script
    assert "updateComment" in script and "createComment" in script
    assert "github.paginate" in script
    assert workflow["jobs"]["plan"]["permissions"]["pull-requests"] == "write"


def test_the_drift_check_fails_on_exit_code_2(workflow: dict[Any, Any]) -> None:
    drift = workflow["jobs"]["drift"]
    assert (
        drift["if"] == "github.event_name == 'schedule' || github.event_name == 'workflow_dispatch'"
    )
    (check,) = [s for s in steps(workflow, "drift") if "--detailed-exitcode" in s.get("run", "")]
    assert 'exit "$code"' in check["run"]
