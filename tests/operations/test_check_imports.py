"""`himl validate --check-imports`: user code that exits while imported is a diagnostic, and
never decides the exit code. Real modules in a tmp project, the real CLI in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ARGS = ["validate", "--check-imports", "--format", "json", "experiments/"]
MANIFEST = "apiVersion: himl/v1\nkind: Experiment\nname: {name}\ncontainer: {container}\n"


def _project(tmp_path: Path, modules: dict[str, str], containers: dict[str, str]) -> Path:
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    for relative, text in modules.items():
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for name, container in containers.items():
        (tmp_path / "experiments" / f"{name}.yaml").write_text(
            MANIFEST.format(name=name, container=container), encoding="utf-8"
        )
    return tmp_path


def _validate(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "himl_manifest.cli.main", *ARGS],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        ("raise SystemExit(3)\n", "sys.exit(3)"),
        ("import sys\nsys.exit(0)\n", "sys.exit(0)"),
        ("import sys\nsys.exit('bye')\n", "sys.exit('bye')"),
        ("raise SystemExit\n", "sys.exit(None)"),
    ],
)
def test_a_module_exiting_at_import_is_a_diagnostic(tmp_path: Path, body: str, shown: str) -> None:
    root = _project(
        tmp_path,
        {"exitpkg/__init__.py": "", "exitpkg/models.py": "class Quitter:\n    pass\n" + body},
        {"quits": "exitpkg.models.Quitter"},
    )
    done = _validate(root)
    assert done.returncode == 1, done.stderr
    payload = json.loads(done.stdout)
    (diagnostic,) = payload["diagnostics"]
    assert diagnostic["file"] == "experiments/quits.yaml"
    assert (diagnostic["line"], diagnostic["path"]) == (4, "container")
    assert "'exitpkg.models'" in diagnostic["message"]
    assert shown in diagnostic["message"]


def test_a_package_searched_for_a_class_exiting_in_a_submodule(tmp_path: Path) -> None:
    """``pkg.Name`` searches every module of pkg: a subpackage whose ``__init__`` exits, and a
    module defining the class that exits, are reported, not obeyed."""
    root = _project(
        tmp_path,
        {
            "searchpkg/__init__.py": "",
            "searchpkg/sub/__init__.py": "import sys\nsys.exit(4)\n",
            "searchpkg/sub/models.py": "class Wanted:\n    pass\n",
        },
        {"wanted": "searchpkg.Wanted"},
    )
    done = _validate(root)
    assert done.returncode == 1, done.stderr
    (diagnostic,) = json.loads(done.stdout)["diagnostics"]
    assert "searchpkg.sub" in diagnostic["message"]
    assert "sys.exit(4)" in diagnostic["message"]


def test_the_namespace_itself_exiting_is_a_diagnostic(tmp_path: Path) -> None:
    root = _project(
        tmp_path,
        {"nspkg/__init__.py": "raise SystemExit(3)\n"},
        {"ns": "nspkg.Anything"},
    )
    done = _validate(root)
    assert done.returncode == 1, done.stderr
    (diagnostic,) = json.loads(done.stdout)["diagnostics"]
    assert "'nspkg'" in diagnostic["message"] and "sys.exit(3)" in diagnostic["message"]
