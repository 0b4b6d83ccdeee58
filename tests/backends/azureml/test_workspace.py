"""Which workspace, which SDK: config.json upward, an explicit file, the environment."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from himl_manifest.backends.azureml.workspace import (
    DEFAULT_DEADLINE_S,
    ENV_RESOURCE_GROUP,
    ENV_SUBSCRIPTION,
    ENV_TIMEOUT,
    ENV_WORKSPACE,
    CachedCredential,
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


def test_the_deadline_comes_from_the_environment() -> None:
    assert Timeouts.from_environment({}).deadline_s == DEFAULT_DEADLINE_S
    chosen = Timeouts.from_environment({ENV_TIMEOUT: "2.5"})
    assert (chosen.deadline_s, chosen.connect_s) == (2.5, 2.5)
    kwargs = chosen.client_kwargs()
    assert kwargs["timeout"] == kwargs["read_timeout"] == 2.5  # one call, retries included
    for bad in ("soon", "0", "-3", "99999"):
        with pytest.raises(ConfigError, match=ENV_TIMEOUT):
            Timeouts.from_environment({ENV_TIMEOUT: bad})


def test_one_token_per_scope_until_it_nearly_expires() -> None:
    from azure.core.credentials import AccessToken

    class Counting:
        def __init__(self) -> None:
            self.calls: list[tuple[str, ...]] = []
            self.expires = time.time() + 3600

        def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
            self.calls.append(scopes)
            return AccessToken(f"token-{len(self.calls)}", int(self.expires))

    inner = Counting()
    cached = CachedCredential(inner)
    first = cached.get_token("https://management.azure.com/.default")
    assert cached.get_token("https://management.azure.com/.default") is first
    cached.get_token("https://ml.azure.com/.default")
    assert len(inner.calls) == 2  # one per scope
    inner.expires = time.time() + 60  # the next token is close to expiring: asked again
    cached._tokens.clear()
    cached.get_token("https://management.azure.com/.default")
    cached.get_token("https://management.azure.com/.default")
    assert len(inner.calls) == 4


def test_the_poll_interval_comes_from_the_environment() -> None:
    from himl_manifest.backends.azureml.workspace import DEFAULT_POLL_S, ENV_POLL, poll_interval

    assert poll_interval({}) == DEFAULT_POLL_S
    assert poll_interval({ENV_POLL: "0.5"}) == 0.5
    for bad in ("often", "-1", "4000"):
        with pytest.raises(ConfigError, match=ENV_POLL):
            poll_interval({ENV_POLL: bad})


def test_a_config_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="must be a JSON object"):
        find_workspace(tmp_path, environ={})


def test_the_cached_credential_closes_the_one_it_wraps() -> None:
    closed: list[bool] = []

    class Closable:
        def close(self) -> None:
            closed.append(True)

    CachedCredential(Closable()).close()
    CachedCredential(object()).close()  # nothing to close: fine
    assert closed == [True]


def _http_error(status: int | None, message: str = "boom") -> Exception:
    from azure.core.exceptions import HttpResponseError

    error = HttpResponseError(message=message)
    error.status_code = status
    return error


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: _http_error(429), r"throttling requests \(429"),
        (lambda: _http_error(502), "answered 502: boom"),
        (lambda: _http_error(None), r"Azure ML workspace w \(resource group g\): boom"),
        (
            lambda: __import__("azure.core.exceptions", fromlist=["x"]).ClientAuthenticationError(
                "expired", response=None
            ),
            "could not get Azure credentials",
        ),
        (
            lambda: __import__("azure.ai.ml.exceptions", fromlist=["x"]).ValidationException(
                message="compute is required", no_personal_data_message="x"
            ),
            "Azure ML refused the job: compute is required",
        ),
        (
            lambda: __import__("azure.ai.ml.exceptions", fromlist=["x"]).MlException(
                message="\x1b[37m\n(x) Asset tiles does not exist.\x1b[39m",
                no_personal_data_message="x",
            ),
            "doing it: Asset tiles does not exist.$",
        ),
        (lambda: RuntimeError("odd"), "doing it: RuntimeError: odd"),
    ],
    ids=["429", "5xx", "no-status", "auth", "validation", "ml-framed", "other"],
)
def test_every_azure_error_becomes_ours(make: object, expected: str) -> None:
    from himl_manifest.backends.azureml.workspace import translate

    exc = make()  # type: ignore[operator]
    error = translate(exc, "doing it", Workspace("s", "g", "w"))
    assert re.search(expected, str(error)), str(error)


def test_azure_errors_translates_only_azures() -> None:
    from himl_manifest.backends.azureml.workspace import azure_errors
    from himl_manifest.errors import StoreError

    with pytest.raises(StoreError, match="answered 503"), azure_errors("x"):
        raise _http_error(503)
    with pytest.raises(KeyError), azure_errors("x"):
        raise KeyError("ours")  # not Azure's: left alone
    with pytest.raises(ConfigError, match="already ours"), azure_errors("x"):
        raise ConfigError("already ours")
