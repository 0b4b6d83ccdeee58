"""A dataset's ``mountpoint`` inside an Azure ML job: the runner links it to where the service
put the input (the job's inputs cannot name it: azure-ai-ml's own checks refuse
``path_on_compute`` for a job built in code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from himl_manifest.errors import ConfigError
from himl_manifest.runner.execute import link_mountpoints


class Container:
    def __init__(self, local: list[Path], mounts: list[Path]) -> None:
        self.local_datasets = local
        self.dataset_mountpoints = mounts


def test_each_mountpoint_leads_to_its_input(tmp_path: Path) -> None:
    given = [tmp_path / "inputs" / "a", tmp_path / "inputs" / "b"]
    for folder in given:
        folder.mkdir(parents=True)
        (folder / "x.csv").write_text(folder.name)
    mounts = [tmp_path / "mnt" / "panda", tmp_path / "mnt" / "tiles"]
    container = Container(given, mounts)
    link_mountpoints(container, in_job=True)  # type: ignore[arg-type]
    assert [(m / "x.csv").read_text() for m in mounts] == ["a", "b"]
    link_mountpoints(container, in_job=True)  # type: ignore[arg-type]  # a second process: fine


def test_outside_a_job_nothing_is_linked(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    container = Container([tmp_path / "a"], [tmp_path / "mnt"])
    link_mountpoints(container, in_job=False)  # type: ignore[arg-type]
    assert not (tmp_path / "mnt").exists()


def test_something_else_at_the_mountpoint_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "taken").mkdir()
    container = Container([tmp_path / "a"], [tmp_path / "taken"])
    with pytest.raises(ConfigError, match="exists already"):
        link_mountpoints(container, in_job=True)  # type: ignore[arg-type]
