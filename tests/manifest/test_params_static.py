"""`himl validate` checks ``params`` names against the container's fields, read from its source
statically (never imported): a real user package written into a tmp project, the real CLI in a
fresh process, and the fields compared with what the runner finds at run time."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himl_manifest.manifest.container_source import SourceIndex, find_class_definitions
from himl_manifest.manifest.loader import load_file
from himl_manifest.manifest.semantic import check
from himl_manifest.manifest.validate import validate_paths

REPO = Path(__file__).resolve().parents[2]
HIML = str(Path(sys.executable).with_name("himl"))

#: A user's project: a base class in one module, the container in another (annotated fields,
#: dataclass-style, and attributes set in __init__), sub-packages with relative imports.
PACKAGE = {
    "myproj/__init__.py": "",
    "myproj/base.py": """
        from typing import ClassVar

        from himl_manifest import LightningContainer


        class BlobsBase(LightningContainer):
            hidden_size: int = 16
            registry: ClassVar[dict[str, int]] = {}
            _cache: int = 0

            def __init__(self) -> None:
                super().__init__()
                self.batch_size = 32
                self._private = 1
        """,
    "myproj/models.py": """
        from typing import Annotated, Literal

        import myproj.base as base_module
        from myproj.base import BlobsBase


        class BlobsClassifier(BlobsBase):
            learning_rate: Annotated[float, "Adam learning rate."] = 0.01
            pretrained: bool = False
            optimizer: Literal["adam", "sgd"] = "adam"

            def __init__(self) -> None:
                super().__init__()
                self.dropout = 0.1
                self.layers = [8, 8]

            def set_model_variant(self, variant_name: str) -> None:
                self.width = 2 if variant_name == "wide" else 1


        class ViaModule(base_module.BlobsBase):
            momentum: float = 0.9
        """,
    "myproj/zoo/__init__.py": "",
    "myproj/zoo/deep.py": """
        from dataclasses import dataclass

        from ..base import BlobsBase
        from . import mixins


        class Deep(mixins.Regularized, BlobsBase):
            depth: int = 3


        @dataclass
        class DataStyle(BlobsBase):  # its generated __init__ skips the bases': a superset is read
            depth: int = 3
        """,
    "myproj/zoo/mixins.py": """
        class Regularized:
            weight_decay: float = 0.0

            def __init__(self) -> None:
                super().__init__()
                self.l1 = 0.0
        """,
    "myproj/odd.py": """
        from himl_manifest.lightning_container import LightningContainer
        from sklearn.base import BaseEstimator


        def make_base():
            return LightningContainer


        class FromThirdParty(BaseEstimator, LightningContainer):
            alpha: float = 1.0


        class FromCall(make_base()):
            alpha: float = 1.0


        class Dynamic(LightningContainer):
            def __init__(self) -> None:
                super().__init__()
                for name in ("a", "b"):
                    setattr(self, name, 0)


        def configure(container):
            container.hidden = 3


        class HandsOut(LightningContainer):
            def __init__(self) -> None:
                super().__init__()
                configure(self)


        def register(cls):
            return cls


        @register
        class Decorated(LightningContainer):
            alpha: float = 1.0


        class NotAContainer:
            alpha: float = 1.0
        """,
    "myproj/twice_a.py": "from himl_manifest import LightningContainer\n"
    "class Twice(LightningContainer):\n    a: int = 1\n",
    "myproj/twice_b.py": "from himl_manifest import LightningContainer\n"
    "class Twice(LightningContainer):\n    b: int = 1\n",
    "myproj/broken.py": "class Broken(LightningContainer:\n",
    "myproj/cycle.py": "class A(B):\n    pass\n\n\nclass B(A):\n    pass\n",
    "myproj/diamond.py": """
        from himl_manifest import LightningContainer


        class Left(LightningContainer):
            left: int = 1


        class Right(LightningContainer):
            right: int = 2


        class Both(Left, Right):
            both: int = 3
        """,
}


def write_project(root: Path, files: dict[str, str]) -> Path:
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "experiments").mkdir(exist_ok=True)
    for relative, text in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", PACKAGE)


@pytest.fixture
def user_modules(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The project importable in this process (for comparing with the runtime fields)."""
    monkeypatch.syspath_prepend(str(project))
    yield project
    for name in list(sys.modules):
        if name == "myproj" or name.startswith("myproj."):
            del sys.modules[name]


def manifest(container: str, params: dict[str, object], name: str = "exp") -> str:
    lines = ["apiVersion: himl/v1", "kind: Experiment", f"name: {name}", f"container: {container}"]
    if params:
        lines.append("params:")
        lines += [f"  {key}: {json.dumps(value)}" for key, value in params.items()]
    return "\n".join(lines) + "\n"


def params_problems(project: Path, container: str, params: dict[str, object]) -> list[str]:
    path = project / "experiments" / "exp.yaml"
    path.write_text(manifest(container, params), encoding="utf-8")
    result = validate_paths([path])
    return [f"{d.line}:{d.column}: {d.path}: {d.message} ({d.hint})" for d in result.diagnostics]


# --- the static reading ---------------------------------------------------------------------------


def test_fields_of_the_class_its_bases_and_the_shipped_base(project: Path) -> None:
    found = SourceIndex().container("myproj.models.BlobsClassifier", [project])
    assert found is not None
    assert found.qualname == "myproj.models.BlobsClassifier"
    assert found.own_fields() == [
        "hidden_size",
        "batch_size",
        "learning_rate",
        "pretrained",
        "optimizer",
        "dropout",
        "layers",
        "width",
    ]
    assert {"max_epochs", "random_seed", "src_checkpoint_trusted"} <= set(found.fields)
    assert not {"registry", "_cache", "_private", "local_dataset"} & set(found.fields)
    assert found.fields["learning_rate"].annotation == "Annotated[float, 'Adam learning rate.']"
    assert found.fields["dropout"].annotation is None
    assert found.fields["hidden_size"].owner == "myproj.base.BlobsBase"


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("myproj.BlobsClassifier", {"learning_rate", "hidden_size"}),  # searched in all of myproj
        ("myproj.models.ViaModule", {"momentum", "hidden_size", "batch_size"}),
        ("myproj.zoo.Deep", {"depth", "weight_decay", "l1", "hidden_size", "batch_size"}),
        ("myproj.zoo.deep.Deep", {"depth"}),
        ("myproj.zoo.DataStyle", {"depth", "hidden_size"}),
        ("myproj.diamond.Both", {"left", "right", "both", "max_epochs"}),
    ],
)
def test_bases_through_imports_of_every_kind(project: Path, name: str, fields: set[str]) -> None:
    found = SourceIndex().container(name, [project])
    assert found is not None
    assert fields <= set(found.fields)


@pytest.mark.parametrize(
    "name",
    [
        "myproj.odd.FromThirdParty",  # a base from an installed package: not followed
        "myproj.odd.FromCall",  # a base that is an expression
        "myproj.odd.Dynamic",  # setattr(self, ...)
        "myproj.odd.HandsOut",  # __init__ hands self to a function
        "myproj.odd.Decorated",  # a decorator that may do anything
        "myproj.odd.NotAContainer",  # the lookup rejects it
        "myproj.Twice",  # defined in two modules: ambiguous
        "myproj.broken.Broken",  # does not parse
        "myproj.cycle.A",  # its own base
        "myproj.models.Missing",
        "nowhere.Container",  # not in the project (an installed package, say)
        "Unknown",  # not in himl_manifest.configs
    ],
)
def test_what_cannot_be_read_statically_is_unknown(project: Path, name: str) -> None:
    assert SourceIndex().container(name, [project]) is None


def test_bare_names_are_read_from_the_shipped_configs(project: Path) -> None:
    found = SourceIndex().container("HelloWorld", [project])
    assert found is not None
    assert found.qualname == "himl_manifest.configs.hello_world.HelloWorld"
    assert found.own_fields() == ["learning_rate"]


def test_static_fields_equal_the_runtime_fields(user_modules: Path) -> None:
    from himl_manifest.runner.container import instantiate
    from himl_manifest.runner.fields import container_fields
    from himl_manifest.runner.lookup import find_container

    index = SourceIndex()
    for name, variant in [
        ("myproj.models.BlobsClassifier", "wide"),
        ("myproj.models.ViaModule", None),
        ("myproj.zoo.Deep", None),
        ("myproj.diamond.Both", None),
    ]:
        runtime = container_fields(instantiate(find_container(name), variant))
        found = index.container(name, [user_modules])
        assert found is not None
        assert set(found.fields) == set(runtime), name


@pytest.mark.slow  # imports torch and Lightning
def test_the_shipped_container_reads_as_it_runs() -> None:
    from himl_manifest.configs.hello_world import HelloWorld
    from himl_manifest.runner.fields import container_fields

    found = SourceIndex().container("HelloWorld", [REPO])
    assert found is not None
    assert set(found.fields) == set(container_fields(HelloWorld()))


def test_one_parse_per_source_file_for_many_manifests(project: Path) -> None:
    folder = project / "experiments"
    for i in range(200):
        text = manifest("myproj.models.BlobsClassifier", {"learning_rate": 0.1}, f"e{i}")
        (folder / f"e{i}.yaml").write_text(text, encoding="utf-8")
    documents = [doc for path in sorted(folder.glob("*.yaml")) for doc in load_file(path).documents]
    index = SourceIndex()
    assert list(check(documents, index)) == []
    # models.py, base.py and the shipped runner/container.py: once each, for 200 manifests.
    assert index.parses == 3


def test_project_wide_search_finds_module_level_classes(project: Path) -> None:
    (project / "src" / "other").mkdir(parents=True)
    (project / "src" / "other" / "nets.py").write_text("class BlobsClassifier:\n    pass\n")
    (project / ".venv" / "lib").mkdir(parents=True)
    (project / ".venv" / "lib" / "x.py").write_text("class BlobsClassifier:\n    pass\n")
    (project / "notes.py").write_text("def f():\n    class BlobsClassifier:\n        pass\n")
    (project / "myproj" / "loop").symlink_to(project, target_is_directory=True)
    roots = [project, project / "src"]
    assert find_class_definitions("BlobsClassifier", roots) == [
        "myproj.models.BlobsClassifier",
        "other.nets.BlobsClassifier",
    ]
    assert find_class_definitions("Nothing", roots) == []


# --- himl validate --------------------------------------------------------------------------------


def test_a_typo_is_an_error_at_the_key_with_a_suggestion(project: Path) -> None:
    problems = params_problems(
        project,
        "myproj.models.BlobsClassifier",
        {"learning_rat": 0.1, "hidden_size": 8, "dropout": 0.5, "max_epoch": 3, "zzz": 1},
    )
    assert problems == [
        "6:3: params.learning_rat: BlobsClassifier has no field 'learning_rat' "
        "(did you mean 'learning_rate'?)",
        "9:3: params.max_epoch: BlobsClassifier has no field 'max_epoch' "
        "(did you mean 'max_epochs'? set it under `trainer:`)",
        "10:3: params.zzz: BlobsClassifier has no field 'zzz' (its fields: hidden_size, "
        "batch_size, learning_rate, pretrained, optimizer, dropout, layers, width)",
    ]


def test_unreadable_containers_are_not_checked(project: Path) -> None:
    for name in ("myproj.odd.Dynamic", "myproj.odd.FromThirdParty", "nowhere.Container"):
        assert params_problems(project, name, {"anything": 1}) == []


def test_params_under_code_root_and_src_are_found(tmp_path: Path) -> None:
    root = write_project(tmp_path / "layout", {})
    for folder in ("code", "src"):
        write_project(root / folder, {f"{folder}_pkg/m.py": PACKAGE["myproj/zoo/mixins.py"]})
        (root / folder / f"{folder}_pkg" / "c.py").write_text(
            "from himl_manifest import LightningContainer\n"
            "class C(LightningContainer):\n    alpha: float = 1.0\n"
        )
    path = root / "experiments" / "exp.yaml"
    text = manifest("code_pkg.c.C", {"alfa": 1}) + "code_root: code\n"
    path.write_text(text, encoding="utf-8")
    (diagnostic,) = validate_paths([path]).diagnostics
    assert (diagnostic.path, diagnostic.hint) == ("params.alfa", "did you mean 'alpha'?")
    path.write_text(manifest("src_pkg.c.C", {"alfa": 1}), encoding="utf-8")
    (diagnostic,) = validate_paths([path]).diagnostics
    assert diagnostic.message == "C has no field 'alfa'"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_property_real_fields_pass_and_other_names_fail(project: Path, data: st.DataObject) -> None:
    found = SourceIndex().container("myproj.zoo.Deep", [project])
    assert found is not None
    from himl_manifest.manifest.semantic import params_conflict

    settable = sorted(f for f in found.fields if params_conflict(f) is None)
    chosen = data.draw(st.lists(st.sampled_from(settable), unique=True, max_size=6))
    assert params_problems(project, "myproj.zoo.Deep", {n: 1 for n in chosen}) == []
    other = data.draw(st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True))
    if other not in found.fields:
        (problem,) = params_problems(project, "myproj.zoo.Deep", {other: 1})
        assert f"Deep has no field {other!r}" in problem


def test_no_false_positives_on_the_example_manifests() -> None:
    paths = [REPO / "experiments", *sorted((REPO / "tests" / "manifests" / "valid").glob("*.y*ml"))]
    for path in paths:
        result = validate_paths([path])
        assert [d for d in result.diagnostics if d.code == "params"] == [], path


FORMATS = {
    "text": "experiments/exp.yaml:6:3: params.learning_rat: BlobsClassifier has no field "
    "'learning_rat' (did you mean 'learning_rate'?)",
    "github": "::error file=experiments/exp.yaml,line=6,col=3,title=himl validate%3A "
    "params.learning_rat::BlobsClassifier has no field 'learning_rat' "
    "(did you mean 'learning_rate'?)",
}


@pytest.mark.slow
def test_the_cli_reports_it_in_every_format_without_importing_user_code(project: Path) -> None:
    marker = project / "imported"
    init = project / "myproj" / "__init__.py"
    init.write_text(f"open({str(marker)!r}, 'w').write('imported')\n", encoding="utf-8")
    text = manifest("myproj.models.BlobsClassifier", {"learning_rat": 0.1})
    (project / "experiments" / "exp.yaml").write_text(text, encoding="utf-8")
    for fmt in ("text", "github", "json"):
        result = subprocess.run(
            [HIML, "validate", "--format", fmt],
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 1, result.stderr
        if fmt == "json":
            (diagnostic,) = json.loads(result.stdout)["diagnostics"]
            assert (diagnostic["line"], diagnostic["column"], diagnostic["path"]) == (
                6,
                3,
                "params.learning_rat",
            )
            assert diagnostic["message"] == "BlobsClassifier has no field 'learning_rat'"
            assert diagnostic["hint"] == "did you mean 'learning_rate'?"
        else:
            assert result.stdout.splitlines()[0] == FORMATS[fmt]
    assert not marker.exists()


def test_the_documented_typo_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from himl_manifest.diagnostics import render_text

    doc = (REPO / "docs" / "manifest.md").read_text(encoding="utf-8")
    start = doc.index("# invalid: params.learning_rat")
    yaml_text = doc[start : doc.index("```", start)]
    text_start = doc.index("```text\n", start) + len("```text\n")
    expected = doc[text_start : doc.index("```", text_start)].splitlines()
    root = write_project(tmp_path / "doc", {"experiments/typo.yaml": yaml_text})
    monkeypatch.chdir(root)
    result = validate_paths([Path("experiments")])
    assert render_text(result.diagnostics, len(result.files)).splitlines() == expected
