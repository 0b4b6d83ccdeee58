"""The light install: the base package brings no torch or Lightning, the `train` extra does,
and every entry point that trains says which extra to install when it is missing.

The "missing" interpreter is this one with a ``sitecustomize`` on ``PYTHONPATH`` whose import
finder refuses torch and Lightning (as an interpreter without them would): each entry point
must answer with the install hint and exit code 1, never a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HINT = "training needs the train extra: pip install 'himl-manifest[train]'"
HEAVY = {"torch", "lightning", "pytorch-lightning"}

BLOCKER = """
import sys


class _NoTraining:
    \"\"\"An import finder that refuses torch and Lightning, as if they were not installed.\"\"\"

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"torch", "lightning", "pytorch_lightning"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTraining())
"""
MANIFEST = "apiVersion: himl/v1\nkind: Experiment\nname: hello\ncontainer: HelloWorld\n"


# -- the resolved metadata ----------------------------------------------------------------


def _closure(name: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution ``name[extras]`` requires, recursively, through the metadata of the
    distributions installed here; markers evaluated for this interpreter, with no extras
    beyond those asked for."""
    found: set[str] = set()
    pending = [(name, extras)]
    expanded: set[tuple[str, frozenset[str]]] = set()
    while pending:
        current, wanted = pending.pop()
        key = (canonicalize_name(current), wanted)
        if key in expanded:
            continue
        expanded.add(key)
        found.add(key[0])
        try:
            requires = importlib.metadata.distribution(current).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue  # named, not installed here: nothing below it to follow
        for text in requires:
            requirement = Requirement(text)
            marker = requirement.marker
            environments = [{"extra": extra} for extra in sorted(wanted)] or [{"extra": ""}]
            if marker is not None and not any(marker.evaluate(env) for env in environments):
                continue
            pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def test_the_base_install_resolves_to_no_torch_or_lightning() -> None:
    base = _closure("himl-manifest")
    assert {"mlflow-skinny", "sqlalchemy", "alembic", "pyyaml", "jsonschema", "click"} <= base
    assert "gitpython" in base
    assert not base & HEAVY, base & HEAVY
    assert not [name for name in base if name.startswith("nvidia-")]


def test_the_train_extra_brings_torch_and_lightning() -> None:
    train = _closure("himl-manifest", frozenset({"train"}))
    assert {"torch", "pytorch-lightning"} <= train
    assert "lightning-utilities" in train  # followed into pytorch-lightning's own metadata


def _version() -> str:
    text = (REPO_ROOT / "src" / "himl_manifest" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    assert match, "__version__ not found"
    return match.group(1)


@pytest.mark.slow
def test_the_wheel_requires_torch_only_with_the_train_extra(tmp_path: Path) -> None:
    built = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from hatchling.build import build_wheel; print(build_wheel(sys.argv[1]))",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    wheel = tmp_path / built.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as archive:
        (metadata_name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    fields = [line.partition(": ") for line in metadata.splitlines() if ": " in line]
    assert ("Version", ": ", _version()) in fields
    assert ("Provides-Extra", ": ", "train") in fields
    requirements = [Requirement(value) for key, _, value in fields if key == "Requires-Dist"]
    torch = [r for r in requirements if r.name == "torch"]
    assert [str(r.marker) for r in torch] == ['extra == "train"']
    assert any(spec.operator == "<" for spec in torch[0].specifier)  # bounded, never open
    core = [r for r in requirements if r.marker is None]
    assert {canonicalize_name(r.name) for r in core} & HEAVY == set()
    lightning = [r for r in requirements if canonicalize_name(r.name) == "pytorch-lightning"]
    assert [str(r.marker) for r in lightning] == ['extra == "train"']


# -- the install hint -----------------------------------------------------------------------


@pytest.fixture
def no_training(tmp_path: Path) -> dict[str, str]:
    """The environment of an interpreter that cannot import torch or Lightning."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCKER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(shim)}
    env.pop("HIML_TRACEBACK", None)
    return env


def _run(
    args: list[str], cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _assert_hint(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert HINT in done.stderr
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr
    assert "torch" in done.stderr.splitlines()[-1]  # names what is missing


def test_the_blocker_really_hides_torch(tmp_path: Path, no_training: dict[str, str]) -> None:
    probe = "try:\n    import torch\nexcept ModuleNotFoundError:\n"
    probe += "    print('missing')\n"
    done = _run([sys.executable, "-c", probe], tmp_path, no_training)
    assert done.stdout == "missing\n", done.stderr


def test_himl_runner_without_the_extra(tmp_path: Path, no_training: dict[str, str]) -> None:
    _assert_hint(_run([str(BIN / "himl-runner"), "--model=HelloWorld"], tmp_path, no_training))


def test_himl_run_without_the_extra(tmp_path: Path, no_training: dict[str, str]) -> None:
    spec = tmp_path / "spec.json"
    _assert_hint(_run([str(BIN / "himl"), "run", str(spec)], tmp_path, no_training))
    # with the extra the same command goes past the check (and stops at the missing spec)
    done = _run([str(BIN / "himl"), "run", str(spec)], tmp_path, {**os.environ})
    assert done.returncode == 1 and "cannot read run spec" in done.stderr
    assert HINT not in done.stderr


def test_check_imports_without_the_extra(tmp_path: Path, no_training: dict[str, str]) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "hello.yaml").write_text(MANIFEST, encoding="utf-8")
    himl = str(BIN / "himl")
    _assert_hint(_run([himl, "validate", "--check-imports"], tmp_path, no_training))
    plain = _run([himl, "validate"], tmp_path, no_training)  # validate itself needs no extra
    assert (plain.returncode, plain.stdout) == (0, "1 file valid.\n"), plain.stderr


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.mark.slow
def test_local_apply_without_the_extra_submits_nothing(
    tmp_path: Path, no_training: dict[str, str]
) -> None:
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "researcher@example.org")
    _git(tmp_path, "config", "user.name", "Researcher")
    (tmp_path / ".gitignore").write_text("mlflow.db\n.himl/\noutputs/\n", encoding="utf-8")
    (tmp_path / "experiments").mkdir()
    (tmp_path / "experiments" / "hello.yaml").write_text(MANIFEST, encoding="utf-8")
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "commit", "-q", "-m", "hello")
    env = {**no_training, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    himl = str(BIN / "himl")
    plan = _run([himl, "plan", "--detailed-exitcode"], tmp_path, env)  # plan needs no extra
    assert plan.returncode == 2, plan.stdout + plan.stderr
    _assert_hint(_run([himl, "apply", "--yes"], tmp_path, env))
    runs = _run([himl, "runs", "--format", "json"], tmp_path, env)
    assert runs.returncode == 0, runs.stderr
    assert json.loads(runs.stdout)["runs"] == []  # no record was created
    assert not (tmp_path / "outputs").exists()


# -- the release tag in the documented pre-commit snippets ----------------------------------

SNIPPET = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def test_every_documented_hook_rev_is_this_version() -> None:
    revs = []
    for doc in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        for block in SNIPPET.findall(doc.read_text(encoding="utf-8")):
            if "himl-manifest" not in block or "rev:" not in block:
                continue
            for line in block.splitlines():
                if line.strip().startswith("rev:"):
                    revs.append((doc.name, line.split(":", 1)[1].strip()))
    assert revs, "no pre-commit snippet of himl-manifest found in README.md or docs/"
    assert {rev for _, rev in revs} == {f"v{_version()}"}, revs


def test_every_documented_schema_url_is_this_version() -> None:
    urls = [
        (doc.name, match.group(1))
        for doc in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
        for match in re.finditer(
            r"/himl-manifest/([^/\s]+)/schema/experiment", doc.read_text(encoding="utf-8")
        )
    ]
    assert urls, "no versioned schema URL found in README.md or docs/"
    assert {tag for _, tag in urls} == {f"v{_version()}"}, urls
