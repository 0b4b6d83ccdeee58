"""The pre-commit hook definitions: shape, and their entry really validates the files given."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def _hook(path: Path) -> dict[str, object]:
    data = yaml.safe_load(path.read_text())
    hooks = data if isinstance(data, list) else [h for r in data["repos"] for h in r["hooks"]]
    (hook,) = [h for h in hooks if h["id"] == "himl-validate"]
    return dict(hook)


def test_hook_definitions() -> None:
    offered = _hook(REPO_ROOT / ".pre-commit-hooks.yaml")
    assert offered["language"] == "python"
    assert offered["pass_filenames"] is True
    assert offered["files"] == r"^experiments/.*\.ya?ml$"
    used = _hook(REPO_ROOT / ".pre-commit-config.yaml")
    assert used["entry"] == offered["entry"] and used["files"] == offered["files"]
    pattern = re.compile(str(offered["files"]))
    assert pattern.search("experiments/hello-world.yaml")
    assert pattern.search("experiments/sub/x.yml")
    assert not pattern.search("schema/experiment.v1.schema.json")


def test_hook_entry_runs_on_the_files_pre_commit_passes(tmp_path: Path) -> None:
    entry = shlex.split(str(_hook(REPO_ROOT / ".pre-commit-hooks.yaml")["entry"]))
    himl = shutil.which(entry[0]) or str(Path(__import__("sys").executable).parent / entry[0])
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    good = tmp_path / "experiments" / "good.yaml"
    good.write_text("apiVersion: himl/v1\nkind: Experiment\nname: good\ncontainer: HelloWorld\n")
    bad = tmp_path / "experiments" / "bad.yaml"
    bad.write_text(good.read_text().replace("name: good", "name: bad") + "mode: trian\n")
    ok = subprocess.run(
        [himl, *entry[1:], "experiments/good.yaml"], cwd=tmp_path, text=True, capture_output=True
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = subprocess.run(
        [himl, *entry[1:], "experiments/good.yaml", "experiments/bad.yaml"],
        cwd=tmp_path,
        text=True,
        capture_output=True,
    )
    assert failed.returncode == 1
    assert "experiments/bad.yaml:5:7: mode: invalid value" in failed.stdout
