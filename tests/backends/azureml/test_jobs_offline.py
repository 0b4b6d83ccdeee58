"""A RunSpec -> an Azure ML command job, checked offline with the SDK's own tools.

Every job built here goes through the client-side checks the SDK runs before it sends a job
(:func:`check_job`: the ``Command``'s schema validation and its REST serialization), is dumped
to YAML, loaded back with ``load_job`` and compared (``_to_dict`` equal), and turned into the
REST body the service would receive. What this proves: the job is well-formed for azure-ai-ml
1.35 and says what we meant. What it cannot prove: that the service accepts it (cluster, data
assets, image build): that is the loopback server's and a real workspace's business.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("azure.ai.ml")

from azure.ai.ml import load_job

from himl_manifest.backends.azureml.jobs import (
    DEFAULT_IMAGE,
    MAX_RUN_SPEC_ENV,
    MAX_VALUE,
    RUN_SPEC_ENV,
    build_command_job,
    build_command_node,
    check_job,
    checkpoint_uri,
    duration_seconds,
    job_name,
    processes_per_node,
)
from himl_manifest.errors import ConfigError
from himl_manifest.manifest.build import load_experiments
from himl_manifest.model import Lifecycle
from himl_manifest.spec import RunSpec, expand

CODE = (
    "/subscriptions/0000/resourceGroups/rg/providers/Microsoft.MachineLearningServices/"
    "workspaces/ws/codes/3fa2c91b/versions/1"
)
CONDA = """\
name: job-env
channels: [conda-forge]
dependencies:
  - python=3.11
  - pip
  - pip:
      - -r requirements.txt
      - himl-manifest[azure]
"""


def write_project(root: Path, *documents: dict[str, Any]) -> list[RunSpec]:
    """A repository with a conda file (and a pip include), the manifests, expanded."""
    (root / ".git").mkdir(exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    (root / "environment.yml").write_text(CONDA, encoding="utf-8")
    (root / "requirements.txt").write_text("torch==2.13.0\nazureml-mlflow>=1.60\n", "utf-8")
    paths = []
    for fields in documents:
        document = {
            "apiVersion": "himl/v1",
            "kind": "Experiment",
            "container": "HelloWorld",
            "seeds": [0],
            "trainer": {"max_epochs": 1, "devices": 1},
            "compute": {"target": "gpu-cluster"},
            **fields,
        }
        path = root / "experiments" / f"{document['name']}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        paths.append(path)
    experiments, result = load_experiments(paths)
    assert result.ok, [d.message for d in result.diagnostics]
    return expand(experiments)


def round_trip(job: Any, tmp_path: Path) -> dict[str, Any]:
    """Dump, load back (the SDK's own checks ran when it was built): the dict must survive
    unchanged. Returns the REST body."""
    dumped = tmp_path / f"{job.name}.yaml"
    job.dump(dumped)
    loaded = load_job(dumped)._to_job()
    assert loaded._to_dict() == job._to_dict()
    body: dict[str, Any] = job._to_rest_object().as_dict()["properties"]
    return body


def build(run: RunSpec, root: Path, attempt: int = 1, **kwargs: Any) -> Any:
    return build_command_job(run, attempt=attempt, code=CODE, root=root, **kwargs)


def test_job_names_are_the_run_name_then_one_per_attempt() -> None:
    assert job_name("hello-s0-3fa2c91b", 1) == "hello-s0-3fa2c91b"
    assert job_name("hello-s0-3fa2c91b", 2) == "hello-s0-3fa2c91b-a2"
    with pytest.raises(ValueError):
        job_name("hello-s0-3fa2c91b", 0)


def test_single_node_job(tmp_path: Path) -> None:
    (run,) = write_project(
        tmp_path, {"name": "hello", "description": "baseline", "tags": {"team": "imaging"}}
    )
    job = build(run, tmp_path)
    body = round_trip(job, tmp_path)

    assert job.name == run.run_name
    assert job.experiment_name == "hello"  # the manifest's name, not the container class
    assert job.display_name == run.run_name
    assert job.description == "baseline"
    assert job.compute == "gpu-cluster"
    assert body["computeId"] == "gpu-cluster"
    assert job.resources.instance_count == 1
    assert job.distribution is None  # one process: no launcher
    assert job.code == CODE
    assert job.command.startswith(
        f"python -m himl_manifest.cli.main run --spec-env {RUN_SPEC_ENV} --output-dir outputs"
    )
    assert job.inputs == {}
    # the run spec travels whole, and comes back equal
    assert RunSpec.from_json(job.environment_variables[RUN_SPEC_ENV]) == run
    # environment: the default image and the conda file with its pip include inlined
    assert job.environment.image == DEFAULT_IMAGE
    assert job.environment.conda_file["dependencies"][-1] == {
        "pip": ["torch==2.13.0", "azureml-mlflow>=1.60", "himl-manifest[azure]"]
    }
    # tags: what changes in place; properties: what never does
    assert job.tags == {"himl.state": "active", "himl.tag.team": "imaging"}
    props = job.properties
    assert props["himl.managed"] == "true"
    assert props["himl.run_name"] == run.run_name
    assert props["himl.experiment"] == "hello"
    assert props["himl.seed"] == "0"
    assert props["himl.spec_hash"] == run.spec_hash
    assert props["himl.attempt"] == "1"
    assert props["himl.manifest_path"] == "experiments/hello.yaml"
    assert props["himl.container"] == "HelloWorld"
    assert props["himl.mode"] == "train"
    assert props["himl.provenance.conda_sha256"] == run.conda_sha256
    assert "himl.resume_from" not in props
    assert not any(key.startswith("himl.spec") and key != "himl.spec_hash" for key in props)
    assert body["environmentVariables"][RUN_SPEC_ENV] == job.environment_variables[RUN_SPEC_ENV]
    assert body["experimentName"] == "hello"
    assert body["properties"] == props


def test_multi_node_job_with_resources(tmp_path: Path) -> None:
    compute = {
        "target": "gpu-cluster",
        "num_nodes": 2,
        "instance_type": "Standard_NC24ads_A100_v4",
        "shm_size": "16g",
        "priority": "high",
        "max_run_duration": "12h",
        "identity_based_auth": True,
    }
    (run,) = write_project(
        tmp_path,
        {
            "name": "big",
            "trainer": {"max_epochs": 1, "devices": 4, "strategy": "ddp"},
            "compute": compute,
            "environment": {"image": "mcr.microsoft.com/azureml/custom:1"},
            "tracking": {"experiment": "scaling", "display_name": "two nodes"},
        },
    )
    job = build(run, tmp_path)
    body = round_trip(job, tmp_path)

    assert job.resources.instance_count == 2
    assert job.resources.instance_type == "Standard_NC24ads_A100_v4"
    assert job.resources.shm_size == "16g"
    assert job.distribution.type == "pytorch"
    assert job.distribution.process_count_per_instance == 4
    assert job.limits.timeout == 12 * 3600
    assert job.queue_settings.priority == "high"
    assert job.identity.type == "user_identity"
    assert job.experiment_name == "scaling"
    assert job.display_name == "two nodes"
    assert job.environment.image == "mcr.microsoft.com/azureml/custom:1"
    assert body["distribution"] == {"distributionType": "PyTorch", "processCountPerInstance": 4}
    assert body["resources"]["instanceCount"] == 2
    assert body["limits"]["timeout"] == "PT12H"


def test_several_seeds_make_one_job_each(tmp_path: Path) -> None:
    runs = write_project(tmp_path, {"name": "seeds", "seeds": 3})
    jobs = [build(run, tmp_path) for run in runs]
    for job in jobs:
        round_trip(job, tmp_path)
    assert [job.name for job in jobs] == [run.run_name for run in runs]
    assert len({job.name for job in jobs}) == 3
    assert [job.properties["himl.seed"] for job in jobs] == ["0", "1", "2"]
    assert {job.experiment_name for job in jobs} == {"seeds"}
    # one environment for all seeds: its version is a content hash
    assert len({job.environment.version for job in jobs}) == 1


def test_inference_from_another_job(tmp_path: Path) -> None:
    (run,) = write_project(
        tmp_path,
        {
            "name": "infer",
            "mode": "inference",
            "checkpoint": {"source": {"run": "train-s0-12345678:best_val_loss.ckpt"}},
        },
    )
    job = build(run, tmp_path)
    body = round_trip(job, tmp_path)
    assert job.properties["himl.mode"] == "inference"
    ckpt = job.inputs["checkpoint"]
    assert ckpt.type == "uri_file"
    assert ckpt.mode == "download"
    assert ckpt.path == (
        "azureml://jobs/train-s0-12345678/outputs/artifacts/paths/outputs/checkpoints/"
        "best_val_loss.ckpt"
    )
    assert "--input checkpoint=${{inputs.checkpoint}}" in job.command
    assert body["inputs"]["checkpoint"]["jobInputType"] == "uri_file"


def test_resume_is_a_new_attempt_reading_the_old_checkpoint(tmp_path: Path) -> None:
    (run,) = write_project(tmp_path, {"name": "longer", "trainer": {"max_epochs": 5, "devices": 1}})
    resumed = replace(run, resume_from="longer-s0-0badc0de")
    job = build(resumed, tmp_path, attempt=2)
    round_trip(job, tmp_path)
    assert job.name == f"{run.run_name}-a2"
    assert job.properties["himl.attempt"] == "2"
    assert job.properties["himl.resume_from"] == "longer-s0-0badc0de"
    assert job.properties["himl.run_name"] == run.run_name
    assert job.inputs["checkpoint"].path == (
        "azureml://jobs/longer-s0-0badc0de/outputs/artifacts/paths/outputs/checkpoints/last.ckpt"
    )


def test_datasets_become_inputs(tmp_path: Path) -> None:
    datasets = [
        {"azure": "panda:3", "mode": "mount", "local": "data/panda"},
        {"azure": "tiles", "mode": "download"},
        {"local": "data/only-here"},
        {"datastore": "workspaceblobstore", "path": "datasets/extra/", "mountpoint": "/mnt/extra"},
        {"datastore": "archive", "path": "x", "mode": "download"},
    ]
    (run,) = write_project(tmp_path, {"name": "data", "datasets": datasets})
    job = build(run, tmp_path)
    body = round_trip(job, tmp_path)
    got = {
        name: (item.type, item.path, item.mode, getattr(item, "path_on_compute", None))
        for name, item in job.inputs.items()
    }
    # the mountpoint is not sent: the runner links it in the job (the SDK's own checks refuse
    # path_on_compute for a job built in code)
    assert got == {
        "dataset_0": ("uri_folder", "azureml:panda:3", "ro_mount", None),
        "dataset_1": ("uri_folder", "tiles@latest", "download", None),
        "dataset_2": (
            "uri_folder",
            "azureml://datastores/workspaceblobstore/paths/datasets/extra",
            "ro_mount",
            None,
        ),
        "dataset_3": ("uri_folder", "azureml://datastores/archive/paths/x", "download", None),
    }
    spec = RunSpec.from_json(job.environment_variables[RUN_SPEC_ENV]).spec
    assert spec["datasets"][3]["mountpoint"] == "/mnt/extra"  # the runner reads it there
    pinned = build(run, tmp_path, latest={"tiles": "7"})
    assert pinned.inputs["dataset_1"].path == "azureml:tiles:7"  # the version latest resolved to
    for name in got:
        assert f"--input {name}=${{{{inputs.{name}}}}}" in job.command
    assert body["inputs"]["dataset_0"]["mode"] == "ReadOnlyMount"
    assert body["inputs"]["dataset_1"]["mode"] == "Download"


def test_checkpoint_of_another_experiment(tmp_path: Path) -> None:
    runs = write_project(
        tmp_path,
        {"name": "pretrain"},
        {
            "name": "finetune",
            "checkpoint": {"source": {"experiment": "pretrain", "file": "best.ckpt"}},
        },
    )
    pretrain, finetune = runs
    job = build(finetune, tmp_path)
    round_trip(job, tmp_path)
    assert job.inputs["checkpoint"].path == (
        f"azureml://jobs/{pretrain.run_name}/outputs/artifacts/paths/outputs/checkpoints/best.ckpt"
    )
    # a store that knows which attempt completed resolves the reference itself
    seen: list[str] = []

    def resolve(reference: str) -> str:
        seen.append(reference)
        return checkpoint_uri(reference.replace(pretrain.run_name, f"{pretrain.run_name}-a2"))

    job = build(finetune, tmp_path, resolve_checkpoint=resolve)
    round_trip(job, tmp_path)
    assert seen == [f"{pretrain.run_name}:best.ckpt"]
    assert f"/jobs/{pretrain.run_name}-a2/" in job.inputs["checkpoint"].path


def test_a_path_or_url_checkpoint_is_no_input(tmp_path: Path) -> None:
    (tmp_path / "model.ckpt").write_bytes(b"x")
    (run,) = write_project(
        tmp_path, {"name": "frompath", "checkpoint": {"source": {"path": "model.ckpt"}}}
    )
    job = build(run, tmp_path)
    round_trip(job, tmp_path)
    assert job.inputs == {}


def test_long_values_stay_under_the_service_limits(tmp_path: Path) -> None:
    params = {f"p{i}": "x" * 900 for i in range(12)}
    (run,) = write_project(
        tmp_path,
        {
            "name": "long",
            "container": "fake.HelloWorld",
            "params": params,
            "description": "d" * 5000,
            "tags": {"t": "v" * 1000},
        },
    )
    run = replace(run, provenance={"commit": "c" * 40, "message": "m" * 7000})
    job = build(run, tmp_path, state=Lifecycle.SUPERSEDED, extra_properties={"himl.apply_id": "a1"})
    round_trip(job, tmp_path)
    values = [*job.properties.values(), *job.tags.values()]
    assert all(len(value) <= MAX_VALUE for value in values) and len(job.description) == 5000
    assert len(job.properties) + len(job.tags) < 50
    assert job.tags["himl.state"] == "superseded"
    assert job.properties["himl.apply_id"] == "a1"
    assert len(job.properties["himl.provenance.message"]) == MAX_VALUE
    assert RunSpec.from_json(job.environment_variables[RUN_SPEC_ENV]) == run  # whole


def test_the_sdks_own_checks_run_before_anything_is_sent(tmp_path: Path) -> None:
    """What azure-ai-ml 1.35 itself refuses client-side is refused here, naming the run."""
    from azure.ai.ml import Input

    (run,) = write_project(tmp_path, {"name": "checked"})
    node = build_command_node(run, attempt=1, code=CODE, environment="azureml:env:1")
    check_job(node, run)  # a job as we build it passes
    node.inputs["extra"] = Input(
        type="uri_folder", path="azureml:x:1", mode="ro_mount", path_on_compute="/mnt/x"
    )
    with pytest.raises(ConfigError, match=rf"{run.run_name}: azure-ai-ml's own checks refused"):
        check_job(node, run)


def test_a_spec_too_long_for_the_job_is_refused(tmp_path: Path) -> None:
    params = {f"p{i}": "x" * 1000 for i in range(MAX_RUN_SPEC_ENV // 1000 + 2)}
    (run,) = write_project(
        tmp_path, {"name": "huge", "container": "fake.HelloWorld", "params": params}
    )
    with pytest.raises(ConfigError, match=RUN_SPEC_ENV):
        build(run, tmp_path)


def test_local_target_and_missing_environment_are_refused(tmp_path: Path) -> None:
    (run,) = write_project(tmp_path, {"name": "here", "compute": {"target": "local"}})
    with pytest.raises(ConfigError, match="local"):
        build(run, tmp_path)
    (run,) = write_project(tmp_path, {"name": "noenv"})
    (tmp_path / "environment.yml").unlink()
    with pytest.raises(ConfigError, match="no conda file"):
        build(run, tmp_path)


def test_an_image_alone_is_enough(tmp_path: Path) -> None:
    (run,) = write_project(
        tmp_path, {"name": "img", "environment": {"image": "myregistry.io/img:7"}}
    )
    (tmp_path / "environment.yml").unlink()
    job = build(run, tmp_path)
    round_trip(job, tmp_path)
    assert job.environment.image == "myregistry.io/img:7"
    assert job.environment.conda_file is None


def test_conda_problems_fail_the_build_naming_file_and_line(tmp_path: Path) -> None:
    (run,) = write_project(tmp_path, {"name": "badenv"})
    (tmp_path / "requirements.txt").write_text("torch\n-r missing.txt\n", "utf-8")
    with pytest.raises(ConfigError, match=r"requirements.txt:2:1: included requirements file"):
        build(run, tmp_path)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(3600, 3600), ("90", 90), ("30s", 30), ("15m", 900), ("1.5h", 5400), ("2d", 172800)],
)
def test_durations(value: int | str, seconds: int) -> None:
    assert duration_seconds(value) == seconds


@pytest.mark.parametrize(("devices", "count"), [(1, 1), (4, 4), ([0, 1, 2], 3), ("auto", 1)])
def test_processes_per_node(devices: Any, count: int) -> None:
    assert processes_per_node({"trainer": {"devices": devices}}) == count


def test_what_the_sdk_says_is_read_to_one_line() -> None:
    from himl_manifest.backends.azureml.jobs import sdk_complaint

    framed = ValueError('{"result": "Failed", "errors": [{"path": "code", "message": "a; b"}]}')
    assert sdk_complaint(framed) == "code: a"
    assert sdk_complaint(KeyError("base_path")) == "'base_path'"
    assert sdk_complaint(ValueError("\n\nfirst\nsecond")) == "first"


def test_odd_values_are_read_or_refused() -> None:
    assert processes_per_node({"trainer": {"devices": True}}) == 1
    assert processes_per_node({"trainer": {"devices": [0, 1, 2]}}) == 3
    assert duration_seconds(90) == 90 and duration_seconds("1.5m") == 90
    with pytest.raises(ConfigError, match="expected seconds"):
        duration_seconds("soon")


def test_an_unresolved_experiment_source_is_refused(tmp_path: Path) -> None:
    from himl_manifest.backends.azureml.jobs import checkpoint_reference

    (run,) = write_project(tmp_path, {"name": "alone"})
    spec = {**run.spec, "checkpoint": {"source": {"experiment": "pretrain"}}}
    with pytest.raises(ConfigError, match="was not resolved to a run"):
        checkpoint_reference(replace(run, spec=spec))
