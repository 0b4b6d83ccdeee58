"""Hostile input through the real CLI (in process): valid-shaped manifests with random YAML
scalars, tags and structures at random places, written in block or flow style, go through
`himl validate` and `himl plan`. Whatever the input: no internal error, no traceback, and an
exit code of 0, 1 or 2."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.manifest import schema

CORPUS = Path(__file__).parents[1] / "manifests" / "valid"
BASES = [
    yaml.safe_load(p.read_text(encoding="utf-8-sig"))
    for p in sorted(CORPUS.glob("*.yaml"))
    if p.read_text(encoding="utf-8-sig").count("\n---") == 0
]


class Raw(str):
    """YAML text written as it is (a tag, a special scalar), not as a quoted string."""


#: Scalars YAML reads in a surprising way, or can't read at all; tags on the wrong kind of node.
RAW = [
    '!!int "abc"',
    '!!int ""',
    "!!int 0b",
    '!!bool "maybe"',
    '!!float "x"',
    '!!float ""',
    '!!timestamp "hello"',
    "!!timestamp 2024-01-01T10:00:00+99:99",
    "2024-13-45",
    "2024-02-30",
    "2024-02-29T25:00:00",
    "2001-12-14t21:59:43.10-05:00",
    '!!binary "@@@"',
    "!!binary aGk=",
    '!!map "x"',
    '!!seq "x"',
    "!!str [1]",
    "!!null [1]",
    "!!int {a: 1}",
    "!!set {a}",
    "!!omap [a: 1]",
    "!!pairs [a: 1]",
    "!!python/name:os.system",
    "!!python/object:os.Pathy {}",
    "!custom x",
    "!<tag:example.org,2002:x> y",
    "!!merge x",
    "!!value x",
    "&a 1",
    "*undefined",
    ".nan",
    ".NaN",
    ".inf",
    "-.inf",
    "+.inf",
    "1e400",
    "1.0e400",
    "-1.0e400",
    "3.0",
    "0.0",
    "2.0",
    "1.5",
    "-0.0",
    "0x" + "f" * 4000,
    "9" * 5000,
    "9" * 4200,
    "1:" + "5" * 5000,
    "190:20:30",
    "0o7",
    "0b101",
    "1_000",
    "~",
    "null",
    "yes",
    "no",
    "on",
    "off",
    "Y",
    "=",
    '"nl\\n"',
    '"\\0"',
    '"a\\0b"',
    '"\\t"',
    '"\\ud800"',
    "''",
    '"  "',
    "'-'",
    "[0.0, 1.0]",
    "[.nan]",
    "[[[[[[[[1]]]]]]]]",
    "{a: {b: {c: {d: {}}}}}",
    "[]",
    "{}",
    "? [a]\n",
    "<<: 1",
    "- x",
    "|\n  literal",
    ">-\n  folded",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),  # NaN and infinity included
    st.sampled_from([0.0, 1.0, 2.0, 3.0, -1.0, 1e300]),
    st.text(max_size=12),
    st.sampled_from(["train", "auto", "himl/v1", "local", "0.5", "x\n", "a\x00b", "../out"]),
    st.sampled_from(RAW).map(Raw),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text(max_size=8) | st.sampled_from(RAW).map(Raw), inner, max_size=3)
    ),
    max_leaves=8,
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


def _scalar(value: Any) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, str):
        # a double-quoted YAML scalar: escapes for control characters, the rest as it is
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    return json.dumps(value)


def _flow(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_flow(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_flow(v) for v in value) + "]"
    return _scalar(value)


def _block(value: Any, indent: int = 0) -> str:
    pad = " " * indent
    if isinstance(value, dict) and value:
        lines = []
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{_scalar(key)}:\n{_block(item, indent + 2)}")
            else:
                lines.append(f"{pad}{_scalar(key)}: {_flow(item)}")
        return "\n".join(lines)
    if isinstance(value, list) and value:
        lines = []
        for item in value:
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}-\n{_block(item, indent + 2)}")
            else:
                lines.append(f"{pad}- {_flow(item)}")
        return "\n".join(lines)
    return pad + _flow(value)


@st.composite
def hostile_manifest(draw: st.DrawFn) -> str:
    """A valid manifest of the corpus with random values at random places, as YAML text."""
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(data)))
        if not path:
            continue
        parent: Any = data
        for step in path[:-1]:
            parent = parent[step]
        action = draw(st.sampled_from(["replace", "insert", "delete"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "insert" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10) | st.sampled_from(RAW).map(Raw))] = draw(
                values
            )
        else:
            parent[path[-1]] = draw(values)
    style = draw(st.sampled_from(["block", "flow"]))
    return (_block(data) if style == "block" else _flow(data)) + "\n"


HOSTILE_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _write(repo: Path, texts: list[str]) -> None:
    folder = repo / "experiments"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for index, text in enumerate(texts):
        (folder / f"m{index}.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")


def _check(capsys: pytest.CaptureFixture[str], args: list[str]) -> tuple[int, str]:
    code = run_cli(cli, args)
    out, err = capsys.readouterr()
    both = out + err
    assert "internal error" not in both, both
    assert "Traceback" not in both, both
    assert code in (0, 1, 2), both
    return code, both


@settings(HOSTILE_SETTINGS, max_examples=100)
@given(
    texts=st.lists(hostile_manifest(), min_size=1, max_size=2),
    output_format=st.sampled_from(["text", "json", "github"]),
)
def test_validate_never_fails_internally(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    texts: list[str],
    output_format: str,
) -> None:
    monkeypatch.delenv("HIML_TRACEBACK", raising=False)
    _write(repo, texts)
    code, out = _check(capsys, ["validate", "--format", output_format, "experiments"])
    if output_format == "json":
        payload = json.loads(out)
        assert payload["valid"] == (code == 0)
        assert payload["files_checked"] == len(texts)


@settings(HOSTILE_SETTINGS, max_examples=25)
@given(texts=st.lists(hostile_manifest(), min_size=1, max_size=2))
def test_plan_never_fails_internally(
    repo: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    texts: list[str],
) -> None:
    monkeypatch.delenv("HIML_TRACEBACK", raising=False)
    _write(repo, texts)
    _check(capsys, ["plan", "--backend", "memory", "--no-color", "--detailed-exitcode"])


# Integers written as floats, NaN, infinity and trailing newlines, anywhere: the compiled fast
# check and jsonschema (with the manifest's stricter rules) give the same answer.
tricky = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, 3.0, 0.5, float("nan"), float("inf"), float("-inf")]),
    st.sampled_from(["nl\n", "hello-world\n", "local\n", "16g\n", "12h\n", "x.ckpt\n"]),
    st.integers(-2, 2),
    values,
)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_fast_check_agrees_with_the_strict_jsonschema_validator(data: st.DataObject) -> None:
    document = copy.deepcopy(data.draw(st.sampled_from(BASES)))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(document)))
        if not path:
            continue
        parent: Any = document
        for step in path[:-1]:
            parent = parent[step]
        parent[path[-1]] = data.draw(tricky)
    fast = schema._fast_check()
    assert fast is not None
    assert fast(document) == schema.validator().is_valid(document)
