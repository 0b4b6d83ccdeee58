"""The README's manifest with every field, submitted: pre-flight finds nothing wrong in a
workspace that has what it names, and every job is accepted, its code uploaded into Azurite.

The regression: its ``mountpoint:`` crashed inside the SDK's own validation
(``KeyError: 'base_path'``) half way through a batch."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from server import FakeWorkspace, backend_of

from himl_manifest.backends.azureml.store import AzureMLBackend
from himl_manifest.manifest.build import load_experiments
from himl_manifest.spec import expand

ROOT = Path(__file__).resolve().parents[3]


def readme_full_example() -> str:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    (text,) = [b for b in blocks if "name: panda-finetune" in b]
    return text


def test_the_readmes_full_example_submits(storage_workspace: FakeWorkspace, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".git").mkdir(parents=True)
    (project / "experiments").mkdir()
    for folder in ("data/panda", "data/hello", "my_pkg"):
        (project / folder).mkdir(parents=True)
    (project / "my_pkg" / "__init__.py").write_text("")
    shutil.copy(ROOT / "environment.yml", project / "environment.yml")
    (project / "config.json").write_text(
        '{"subscription_id": "s", "resource_group": "r", "workspace_name": "w"}'
    )
    manifest = project / "experiments" / "panda.yaml"
    manifest.write_text(readme_full_example(), encoding="utf-8")
    experiments, result = load_experiments([manifest])
    assert result.ok, [d.message for d in result.diagnostics]
    runs = expand(experiments)

    storage_workspace.add_compute("gpu-cluster", vm_size="Standard_NC48ads_A100_v4", max_nodes=4)
    storage_workspace.add_data("panda", ["1", "2", "3"])
    backend: AzureMLBackend = backend_of(storage_workspace, project, code=None)
    problems = backend.preflight(runs)
    assert [d for d in problems if d.severity == "error"] == []
    submitted = backend.submit(runs)
    assert [s.outcome for s in submitted] == ["created"] * 3
    job = storage_workspace.jobs[runs[0].run_name]["properties"]
    assert job["resources"]["instanceCount"] == 2
    assert job["distribution"]["processCountPerInstance"] == 2
    assert sorted(job["inputs"]) == ["dataset_0", "dataset_1"]
    assert "/mnt/panda" in job["environmentVariables"]["HIML_RUN_SPEC"]
    assert len(storage_workspace.uploads) == 1
