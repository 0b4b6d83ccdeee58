"""Pre-flight of Azure ML runs: every problem at once, as validate's diagnostics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from himl_manifest.backends.azureml.preflight import preflight
from himl_manifest.backends.azureml.snapshot import SIZE_LIMIT
from himl_manifest.diagnostics import Diagnostic, render_text
from himl_manifest.manifest.build import load_experiments
from himl_manifest.spec import RunSpec, expand

GOOD_CONDA = """\
name: env
dependencies:
  - python=3.11
  - pip:
      - -r requirements.txt
"""


def project(
    root: Path, *documents: dict[str, Any], conda: str | None = GOOD_CONDA
) -> list[RunSpec]:
    (root / ".git").mkdir(exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    (root / ".gitignore").write_text(".git/\n", encoding="utf-8")
    (root / "train.py").write_text("print(1)\n", encoding="utf-8")
    if conda is not None:
        (root / "environment.yml").write_text(conda, encoding="utf-8")
        (root / "requirements.txt").write_text(
            "himl-manifest[azure]\nazureml_mlflow>=1.60\n", encoding="utf-8"
        )
    paths = []
    for fields in documents:
        document = {
            "apiVersion": "himl/v1",
            "kind": "Experiment",
            "container": "HelloWorld",
            "seeds": [0, 1],
            "compute": {"target": "gpu-cluster"},
            **fields,
        }
        path = root / "experiments" / f"{document['name']}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        paths.append(path)
    experiments, result = load_experiments(paths)
    assert result.ok, [d.message for d in result.diagnostics]
    return expand(experiments)


def summary(found: list[Diagnostic]) -> list[tuple[str, str, str, str]]:
    return [(d.file, d.path, d.severity, d.message) for d in found]


def test_a_clean_project_has_no_problems(tmp_path: Path) -> None:
    runs = project(tmp_path, {"name": "hello"})
    assert preflight(runs, tmp_path) == []


def test_local_runs_are_not_looked_at(tmp_path: Path) -> None:
    runs = project(tmp_path, {"name": "here", "compute": {"target": "local"}}, conda=None)
    assert preflight(runs, tmp_path) == []


def test_every_problem_at_once(tmp_path: Path) -> None:
    runs = project(
        tmp_path,
        {"name": "big", "compute": {"target": "gpu-cluster", "num_nodes": 2}},
        {"name": "frompath", "checkpoint": {"source": {"path": "weights/model.ckpt"}}},
    )
    (tmp_path / ".gitignore").write_text("weights/\n", encoding="utf-8")
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "model.ckpt").write_bytes(b"w")
    with (tmp_path / "huge.bin").open("wb") as handle:
        handle.truncate(SIZE_LIMIT + 10)
    (tmp_path / "broken.py").symlink_to("nowhere.py")
    (tmp_path / "alias.py").symlink_to("train.py")
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/heads/main\n", encoding="utf-8")
    (tmp_path / "requirements.txt").write_text("torch\n-r gone.txt\n", encoding="utf-8")

    found = preflight(runs, tmp_path)
    text = render_text(found, 1)

    over = next(d for d in found if "over Azure ML's" in d.message)
    assert over.file == "."
    assert "huge.bin (300.0 MB)" in over.message
    assert "add to ./.amlignore: /huge.bin" in over.hint
    assert "replaces .gitignore" in over.hint
    assert not any("the .git folder" in d.message for d in found)  # never uploaded
    broken = next(d for d in found if "broken.py" in d.message)
    assert broken.severity == "error"
    alias = next(d for d in found if "alias.py" in d.message)
    assert alias.severity == "warning"
    ckpt = next(d for d in found if d.path == "checkpoint.source.path")
    assert ckpt.file == "experiments/frompath.yaml"
    assert "not in the code snapshot" in ckpt.message
    include = next(d for d in found if d.file == "requirements.txt")
    assert (include.line, include.column) == (2, 1)
    assert include.message.startswith("included requirements file not found")
    # the conda file no longer installs himl-manifest or azureml-mlflow
    warned = {d.hint for d in found if d.file == "environment.yml"}
    assert warned == {
        "add `himl-manifest[azure]` to the pip section",
        "add `azureml-mlflow` to the pip section",
    }
    devices = [d for d in found if d.path == "trainer.devices"]
    assert len(devices) == 1  # one per manifest, not one per seed
    assert devices[0].file == "experiments/big.yaml"
    assert "problems in" in text.splitlines()[-1]


def test_no_conda_file_and_no_image(tmp_path: Path) -> None:
    runs = project(tmp_path, {"name": "bare"}, conda=None)
    (found,) = preflight(runs, tmp_path)
    assert (found.file, found.path, found.severity) == (
        "experiments/bare.yaml",
        "environment.conda_file",
        "error",
    )
    runs = project(tmp_path, {"name": "image", "environment": {"image": "r.io/i:1"}}, conda=None)
    assert preflight(runs, tmp_path) == []


def test_the_workspace_hook_adds_its_diagnostics(tmp_path: Path) -> None:
    runs = project(tmp_path, {"name": "hello"})
    seen: list[int] = []

    def workspace_check(selected: Sequence[RunSpec]) -> list[Diagnostic]:
        seen.append(len(selected))
        return [
            Diagnostic(
                "experiments/hello.yaml",
                0,
                0,
                "compute.target",
                "no cluster 'gpu-cluster'",
                code="preflight",
            )
        ]

    found = preflight(runs, tmp_path, workspace_check=workspace_check)
    assert seen == [2]
    assert summary(found) == [
        ("experiments/hello.yaml", "compute.target", "error", "no cluster 'gpu-cluster'")
    ]
