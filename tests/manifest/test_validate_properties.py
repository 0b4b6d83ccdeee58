"""Property tests: mutated manifests give diagnostics or success, never an exception; every
diagnostic is complete; the compiled fast check agrees with jsonschema."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himl_manifest.manifest import schema as schema_module
from himl_manifest.manifest.validate import validate_paths

CORPUS = Path(__file__).parents[1] / "manifests" / "valid"
BASES = [
    yaml.safe_load(p.read_text(encoding="utf-8-sig"))
    for p in sorted(CORPUS.glob("*.yaml"))
    if p.read_text(encoding="utf-8-sig").count("\n---") == 0
]
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["train", "auto", "himl/v1", "local", "0.5", "yes"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for key, value in data.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            found += _paths(value, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        if not path:
            continue
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["delete", "rename", "insert", "replace"]))
        if action == "delete":
            del parent[last]
        elif action == "rename" and isinstance(parent, dict):
            parent[str(last) + draw(st.sampled_from(["s", "_", "x", ""]))[:1]] = parent.pop(last)
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
        else:
            parent[last] = draw(values)
    return data


def _check_diagnostics(folder: Path, parsed: bool) -> None:
    result = validate_paths([folder])
    for d in result.diagnostics:
        assert d.file and d.message
        assert d.code
        if parsed and d.code in ("schema", "semantic", "shape"):
            assert d.line >= 1 and d.column >= 1
            assert d.path or d.code == "shape" or d.message.startswith("missing required key")


@SETTINGS
@given(data=mutated())
def test_mutated_documents_never_crash(data: Any, tmp_path: Path) -> None:
    folder = tmp_path / "experiments"
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    _check_diagnostics(folder, parsed=True)


@SETTINGS
@given(
    base=st.sampled_from(sorted(CORPUS.glob("*.yaml"))),
    edits=st.lists(
        st.tuples(st.integers(0, 10_000), st.integers(0, 5), st.text(max_size=4)), max_size=4
    ),
)
def test_random_text_edits_never_crash(
    base: Path, edits: list[tuple[int, int, str]], tmp_path: Path
) -> None:
    text = base.read_text(encoding="utf-8-sig")
    for at, cut, insert in edits:
        at %= len(text) + 1
        text = text[:at] + insert + text[at + cut :]
    folder = tmp_path / "experiments"
    folder.mkdir(exist_ok=True)
    (folder / "m.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    _check_diagnostics(folder, parsed=False)


_jsonschema = schema_module.validator()


@settings(max_examples=300, deadline=None)
@given(data=mutated())
def test_fast_check_agrees_with_jsonschema(data: Any) -> None:
    fast = schema_module._fast_check()
    assert fast is not None
    assert fast(data) == _jsonschema.is_valid(data)


@pytest.mark.parametrize("base", BASES, ids=lambda b: b["name"])
def test_fast_check_accepts_the_valid_corpus(base: Any) -> None:
    fast = schema_module._fast_check()
    assert fast is not None and fast(base)
