"""Which tags a run carries: a user's tags never overwrite the tool's own (``himl.state``...).

`himl validate` refuses a manifest tag under a reserved prefix (tests/manifests/invalid/
tags-reserved-prefix.yaml); these tests hold the runner to the same rule for what reaches it
anyway: a run spec written by hand or by an older version, and a container's
``get_additional_tags()``. The run is trained for real by the local backend's worker process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from himl_manifest.backends.local import LocalBackend
from himl_manifest.manifest.build import normalize
from himl_manifest.model import Lifecycle, RunStatus
from himl_manifest.records import plain_tags, reserved_tag
from himl_manifest.spec import RunSpec, seed_spec

HOSTILE = {
    "himl.state": "archived",
    "HIML.spec_hash": "v1:" + "f" * 64,
    "mlflow.runName": "renamed",
    "azureml.hidden": "x",
    "team": "imaging",
}

TAGGING = """
from himl_manifest.configs.hello_world import HelloWorld

class Tagging(HelloWorld):
    def get_additional_tags(self):
        return {"himl.state": "superseded", "mlflow.note.content": "x", "purpose": "probe"}
"""


def _spec(**manifest: Any) -> RunSpec:
    document = {"apiVersion": "himl/v1", "kind": "Experiment", "name": "tagged"}
    document.update(
        {"container": "HelloWorld", "trainer": {"max_epochs": 1, "accelerator": "cpu"}, **manifest}
    )
    spec = seed_spec(normalize(document), 0)
    return RunSpec("tagged", 0, spec, "v1:" + "1" * 64, "tagged-s0-11111111", "experiments/t.yaml")


def _trained(project: Path, run: RunSpec) -> Any:
    backend = LocalBackend(os.environ["MLFLOW_TRACKING_URI"], project)
    backend.submit([run])
    (record,) = backend.wait([run.run_name])
    assert record.status == RunStatus.COMPLETED, record.error_tail
    (listed,) = LocalBackend(os.environ["MLFLOW_TRACKING_URI"], project).list_runs()
    return backend, listed


def test_reserved_manifest_tags_never_reach_the_run(project: Path) -> None:
    backend, record = _trained(project, _spec(tags=HOSTILE))
    assert record.state == Lifecycle.ACTIVE  # not archived: the next plan keeps it
    assert record.spec_hash == "v1:" + "1" * 64
    tags = backend.store.get(record.run_id).data.tags
    assert tags["team"] == "imaging"
    assert tags["mlflow.runName"] == "tagged-s0-11111111"
    assert "azureml.hidden" not in tags and "HIML.spec_hash" not in tags


def test_a_containers_additional_tags_cannot_set_the_state(project: Path, package: Any) -> None:
    package("tagging_pkg", {"models.py": TAGGING})
    backend, record = _trained(project, _spec(container="tagging_pkg.models.Tagging"))
    assert record.state == Lifecycle.ACTIVE
    tags = backend.store.get(record.run_id).data.tags
    assert tags["purpose"] == "probe" and tags.get("mlflow.note.content") != "x"


def test_one_rule_decides_which_user_tags_a_run_carries() -> None:
    assert plain_tags(HOSTILE) == {"team": "imaging"}
    assert all(reserved_tag(k) for k in HOSTILE if k != "team")
    assert not reserved_tag("himlx.state") and not reserved_tag("my.himl.state")
