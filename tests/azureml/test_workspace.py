"""Which workspace, which SDK: config.json upward, an explicit file, the environment."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from himl_manifest.backends.azureml.workspace import (
    ENV_RESOURCE_GROUP,
    ENV_SUBSCRIPTION,
    ENV_WORKSPACE,
    Timeouts,
    Workspace,
    find_workspace,
    require_sdk,
)
from himl_manifest.errors import BackendUnavailable, ConfigError

CONFIG = {"subscription_id": "sub", "resource_group": "rg", "workspace_name": "ws"}
ENV = {ENV_SUBSCRIPTION: "s2", ENV_RESOURCE_GROUP: "rg2", ENV_WORKSPACE: "ws2"}


def test_config_json_is_searched_upward(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    project = tmp_path / "a" / "b"
    project.mkdir(parents=True)
    found = find_workspace(project, environ={})
    assert (found.subscription_id, found.resource_group, found.workspace_name) == (
        "sub",
        "rg",
        "ws",
    )
    assert found.source == str(tmp_path.resolve() / "config.json")


def test_an_explicit_file_wins_then_the_environment(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "other.json").write_text(json.dumps({**CONFIG, "workspace_name": "other"}))
    assert find_workspace(tmp_path, "other.json", environ=ENV).workspace_name == "other"
    assert find_workspace(tmp_path, environ=ENV) == Workspace("s2", "rg2", "ws2", "environment")
    with pytest.raises(ConfigError, match="does not exist"):
        find_workspace(tmp_path, "missing.json", environ={})


def test_missing_incomplete_and_bad_configs_say_what_to_do(tmp_path: Path) -> None:
    project = tmp_path / "p"
    project.mkdir()
    with pytest.raises(ConfigError, match=r"config\.json"):
        find_workspace(project, environ={}) if not (Path("/") / "config.json").exists() else (
            _raise()
        )
    with pytest.raises(ConfigError, match=ENV_WORKSPACE):
        find_workspace(project, environ={ENV_SUBSCRIPTION: "s", ENV_RESOURCE_GROUP: "r"})
    (project / "config.json").write_text('{"subscription_id": "s"}')
    with pytest.raises(ConfigError, match="missing resource_group, workspace_name"):
        find_workspace(project, environ={})
    (project / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable workspace config"):
        find_workspace(project, environ={})


def _raise() -> None:
    raise ConfigError("config.json found at / on this machine")


def test_timeouts_reach_the_transport() -> None:
    kwargs = Timeouts(connect_s=2, deadline_s=3, retries=1).client_kwargs()
    assert (kwargs["connection_timeout"], kwargs["timeout"], kwargs["retry_total"]) == (
        2,
        3,
        1,
    )


def test_without_the_azure_extra_the_backend_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "azure.ai.ml", None)
    with pytest.raises(BackendUnavailable, match=r"pip install 'himl-manifest\[azure\]'"):
        require_sdk()
