"""Routing by the manifest: ``compute.target: local`` runs here, any other target in Azure ML."""

from __future__ import annotations

import pytest
from backend_helpers import MakeRuns

from himl_manifest.backends.base import SubmitOutcome
from himl_manifest.backends.memory import MemoryBackend
from himl_manifest.backends.registry import AZUREML, LOCAL
from himl_manifest.backends.registry import placement as route
from himl_manifest.backends.routed import RoutedBackend
from himl_manifest.errors import ConfigError
from himl_manifest.model import Lifecycle, RunStatus


def test_the_target_decides(make_runs: MakeRuns) -> None:
    (here,) = make_runs("here")
    (there,) = make_runs("there", compute={"target": "gpu-cluster"})
    assert (route(here), route(there)) == (LOCAL, AZUREML)


def test_each_run_goes_to_its_backend_and_one_listing_covers_both(make_runs: MakeRuns) -> None:
    local, azure = MemoryBackend(), MemoryBackend()
    backend = RoutedBackend({LOCAL: local, AZUREML: azure}, route_of=route)
    (here,) = make_runs("here")
    (there,) = make_runs("there", compute={"target": "gpu-cluster"})
    outcomes = backend.submit([here, there])
    assert [(s.run_name, s.outcome) for s in outcomes] == [
        (here.run_name, SubmitOutcome.CREATED),
        (there.run_name, SubmitOutcome.CREATED),
    ]
    assert [r.run_name for r in local.records()] == [here.run_name]
    assert [r.run_name for r in azure.records()] == [there.run_name]
    records = backend.wait([here.run_name, there.run_name])
    assert {(r.run_name, r.status) for r in records} == {
        (here.run_name, RunStatus.COMPLETED),
        (there.run_name, RunStatus.COMPLETED),
    }
    assert {r.run_name for r in backend.list_runs()} == {here.run_name, there.run_name}
    backend.set_state(there.run_name, Lifecycle.ARCHIVED)
    assert [r.state for r in azure.records()] == [Lifecycle.ARCHIVED]
    assert [r.state for r in local.records()] == [Lifecycle.ACTIVE]


def test_a_cluster_run_without_a_workspace_is_refused_before_anything_is_submitted(
    make_runs: MakeRuns,
) -> None:
    local = MemoryBackend()
    backend = RoutedBackend(
        {LOCAL: local},
        route_of=route,
        missing={AZUREML: "no Azure ML workspace is configured (config.json)"},
    )
    (here,) = make_runs("here")
    (there,) = make_runs("there", compute={"target": "gpu-cluster"})
    with pytest.raises(ConfigError, match=r"compute.target 'gpu-cluster' needs azureml: no Azure"):
        backend.submit([here, there])
    assert local.records() == []
