"""Fixtures of the Azure ML tests: a loopback workspace (server.py) and a backend over it.

The server is the one stand-in for Azure: azure-ai-ml itself makes every request, over HTTPS
with a certificate made for the test, with a test credential (any token will do).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("azure.ai.ml")

from server import FakeWorkspace, MakeRuns, backend_of, behaviour_outcome, runner_tags

from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.manifest.build import load_experiments
from himl_manifest.spec import RunSpec, expand


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    return tmp_path


@pytest.fixture
def workspace(tmp_path: Path) -> Iterator[FakeWorkspace]:
    fake = FakeWorkspace(tmp_path, page_size=2, outcome=behaviour_outcome, on_finish=runner_tags)
    yield fake
    fake.close()


@pytest.fixture
def backend(workspace: FakeWorkspace, project: Path) -> AzureMLBackend:
    return backend_of(workspace, project)  # type: ignore[no-any-return]


@pytest.fixture
def make_runs(project: Path) -> MakeRuns:
    """Write a manifest for an Azure ML cluster and expand it into run specs."""

    def make(name: str = "hello", **fields: Any) -> list[RunSpec]:
        document = {
            "apiVersion": "himl/v1",
            "kind": "Experiment",
            "name": name,
            # Not in the project: the fake service reads params (`behaviour`) it has no field for.
            "container": "fake.HelloWorld",
            "seeds": [0],
            "trainer": {"max_epochs": 1},
            "compute": {"target": "gpu-cluster"},
            "environment": {"image": "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:latest"},
            **fields,
        }
        path = project / "experiments" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        experiments, diagnostics = load_experiments([path])
        assert experiments, diagnostics
        return expand(experiments)

    return make


# --- blob storage: Azurite (azurite.py) --------------------------------------------------------


@pytest.fixture(scope="session")
def azurite() -> Iterator[Any]:
    """One Azurite blob service per test process (per xdist worker), started on first use.
    Not installed: the test errors with the command that installs it (never a skip)."""
    from azurite import Azurite

    emulator = Azurite().start()
    yield emulator
    emulator.stop()


@pytest.fixture
def storage_workspace(tmp_path: Path, azurite: Any) -> Iterator[FakeWorkspace]:
    """The ``workspace`` fixture's fake workspace with blob storage: code uploads run for real
    against Azurite (each ``startPendingUpload`` gets a new container)."""
    fake = FakeWorkspace(
        tmp_path,
        page_size=2,
        outcome=behaviour_outcome,
        on_finish=runner_tags,
        storage=azurite,
    )
    yield fake
    fake.close()


@pytest.fixture
def fast_blob_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """azure-storage-blob's retries without their 15-40 s back-off (one retry, at once): a
    blob-store fault surfaces in well under a second instead of ~60-85 s. azure-ai-ml makes its
    blob clients itself, with no retry settings of ours, so the default policy is swapped."""
    from azurite import FastRetry

    monkeypatch.setattr("azure.storage.blob._shared.base_client.ExponentialRetry", FastRetry)
