"""A user's mistake is never an internal error: values YAML can't build, floats where integers
are meant, NaN and infinity, patterns and a trailing newline, many problems in one file, and
`himl plan` validating before it opens a store."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.manifest import loader, schema, yaml_bounds
from himl_manifest.manifest.fastcheck import ecma_regex
from himl_manifest.manifest.loader import load_file
from himl_manifest.manifest.validate import validate_paths
from himl_manifest.manifest.yaml_bounds import MAX_INT_DIGITS

HEAD = "apiVersion: himl/v1\nkind: Experiment\ncontainer: HelloWorld\nname: bad\n"
OTHER = "apiVersion: himl/v1\nkind: Experiment\ncontainer: HelloWorld\nname: other\ntrainer:\n"
OTHER += "  max_epoch: 3\n"
_PURE_STRICT = yaml_bounds.strict_loader(yaml.SafeLoader)


@pytest.fixture(params=["libyaml", "python"])
def yaml_build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """libyaml's parser where PyYAML has it, and the pure Python one."""
    if request.param == "libyaml":
        if not hasattr(yaml, "CSafeLoader"):
            pytest.skip("PyYAML built without libyaml")
    else:
        monkeypatch.setattr(loader, "_Loader", yaml.SafeLoader)
        monkeypatch.setattr(loader, "_StrictLoader", _PURE_STRICT)
    yield request.param


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = run_cli(cli, list(args))
    out, err = capsys.readouterr()
    return code, out + err


# --- 11: values YAML itself can't build --------------------------------------------------------

UNBUILDABLE = [
    ('seeds: !!int "abc"', 5, 8, "cannot read 'abc' as an integer (YAML tag '!!int')"),
    ('seeds: !!int ""', 5, 8, "cannot read '' as an integer (YAML tag '!!int')"),
    ('x: !!bool "maybe"', 5, 4, "cannot read 'maybe' as a boolean (YAML tag '!!bool')"),
    ('x: !!float "x"', 5, 4, "cannot read 'x' as a number (YAML tag '!!float')"),
    ('x: !!timestamp "hello"', 5, 4, "cannot read 'hello' as a date (YAML tag '!!timestamp')"),
    ('x: !!map "x"', 5, 4, "cannot read 'x' as a mapping (YAML tag '!!map')"),
    (
        "x: 2024-13-45",
        5,
        4,
        "not a valid date or time '2024-13-45': month must be in 1..12 (quote it to keep it as "
        "text)",
    ),
    (
        "x: [1, 2024-02-30]",
        5,
        8,
        "not a valid date or time '2024-02-30': day is out of range for month (quote it to keep "
        "it as text)",
    ),
    ("seeds: " + "9" * 5000, 5, 8, f"integer too large: over {MAX_INT_DIGITS} digits"),
    ("seeds: 0x" + "f" * 4000, 5, 8, f"integer too large: over {MAX_INT_DIGITS} digits"),
    ("x:\n  - y: !!int 1:" + "5" * 5000, 6, 8, f"integer too large: over {MAX_INT_DIGITS} digits"),
]


@pytest.mark.parametrize(("line", "row", "column", "message"), UNBUILDABLE)
def test_a_value_yaml_cannot_build_is_a_diagnostic_at_its_position(
    repo: Path, yaml_build: str, line: str, row: int, column: int, message: str
) -> None:
    (repo / "experiments" / "a.yaml").write_text(HEAD + line + "\n")
    found = [
        (d.file, d.line, d.column, d.message)
        for d in load_file(Path("experiments/a.yaml")).diagnostics
    ]
    assert found == [("experiments/a.yaml", row, column, message)]


@pytest.mark.parametrize(
    "line", [case[0] for case in UNBUILDABLE] + ['code_root: "src\\0"', 'trainer: {x: "\\0"}']
)
def test_the_other_files_are_still_checked_and_json_prints_them_all(
    repo: Path, capsys: pytest.CaptureFixture[str], line: str
) -> None:
    (repo / "experiments" / "a.yaml").write_text(HEAD + line + "\n")
    (repo / "experiments" / "b.yaml").write_text(OTHER)
    code, out = _run(capsys, "validate", "--format", "json")
    assert code == 1
    payload = json.loads(out)
    files = [(d["file"], d["line"] > 0) for d in payload["diagnostics"]]
    assert ("experiments/a.yaml", True) in files
    assert ("experiments/b.yaml", True) in files
    assert "internal error" not in out


def test_a_nul_character_in_any_path_field_is_refused_not_a_crash(repo: Path) -> None:
    """The schema refuses NUL in every path (`code_root` included), and the path rule never
    passes one to the OS."""
    fields = [
        'code_root: "a\\0b"',
        'environment: {conda_file: "env\\0.yml"}',
        'checkpoint: {source: {path: "m\\0.ckpt"}}',
        'compute: {workspace_config: "c\\0.json"}',
        'datasets: [{local: "d\\0"}]',
    ]
    for index, field in enumerate(fields):
        text = HEAD.replace("name: bad", f"name: bad{index}") + field + "\n"
        (repo / "experiments" / f"{index}.yaml").write_text(text)
    result = validate_paths([repo / "experiments"])
    assert len(result.diagnostics) == len(fields)
    assert {d.message.split(": ", 1)[1] for d in result.diagnostics} == {
        "a path may not contain a NUL character"
    }


def test_a_path_the_os_cannot_look_at_is_a_diagnostic(repo: Path) -> None:
    (repo / "experiments" / "a.yaml").write_text(
        HEAD + "environment: {conda_file: " + "e" * 1000 + "}\n"
    )
    (repo / "experiments" / "b.yaml").write_text(OTHER)
    found = [(d.file, d.line, d.column) for d in validate_paths([Path("experiments")]).diagnostics]
    assert found == [("experiments/a.yaml", 5, 27), ("experiments/b.yaml", 6, 3)]


@pytest.mark.parametrize("char", ["\x80", "\x9f", "\ufffe"])
def test_a_character_yaml_refuses_is_located(repo: Path, yaml_build: str, char: str) -> None:
    (repo / "experiments" / "a.yaml").write_text(HEAD + f'description: "\u00e9{char}"\n')
    found = [
        (d.line, d.column, d.message) for d in validate_paths([Path("experiments")]).diagnostics
    ]
    code = f"{ord(char):04X}"
    assert found == [
        (
            5,
            16,
            f"character U+{code} is not allowed in YAML text (in a double-quoted string, write "
            f"it as \\u{code.lower()})",
        )
    ]


# --- 12 and 14: integers written as floats; NaN and infinity ------------------------------------


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"seeds": 3.0}, "seeds"),
        ({"seeds": [0.0, 1.0]}, "seeds[0]"),
        ({"trainer": {"max_epochs": 2.0}}, "trainer.max_epochs"),
        ({"trainer": {"devices": 2.0}}, "trainer.devices"),
        ({"trainer": {"devices": [0.0]}}, "trainer.devices[0]"),
        ({"trainer": {"limit_val_batches": 2.0}}, "trainer.limit_val_batches"),
        ({"retry": {"max_attempts": 3.0}}, "retry.max_attempts"),
        ({"compute": {"num_nodes": 1.0}}, "compute.num_nodes"),
        ({"trainer": {"limit_val_batches": float("nan")}}, "trainer.limit_val_batches"),
        ({"trainer": {"limit_train_batches": float("inf")}}, "trainer.limit_train_batches"),
        ({"trainer": {"gradient_clip_val": float("inf")}}, "trainer.gradient_clip_val"),
        ({"params": {"lr": float("-inf")}}, "params.lr"),
        ({"params": {"lrs": [0.1, float("nan")]}}, "params.lrs[1]"),
    ],
)
def test_floats_for_integers_and_non_finite_numbers_are_refused_by_both_checkers(
    data: dict[str, Any], path: str
) -> None:
    document = {"apiVersion": "himl/v1", "kind": "Experiment", "name": "x", "container": "C"}
    document.update(data)
    fast = schema._fast_check()
    assert fast is not None and not fast(document)
    assert not schema.validator().is_valid(document)
    assert path in [schema.format_path(p.path) for p in schema.problems(document)]


@pytest.mark.parametrize("value", [1.0, 0.5, 1, 10, 0])
def test_limit_batches_still_takes_a_fraction_or_a_count(value: float) -> None:
    document = {"apiVersion": "himl/v1", "kind": "Experiment", "name": "x", "container": "C"}
    document["trainer"] = {"limit_val_batches": value}
    fast = schema._fast_check()
    assert fast is not None and fast(document)
    assert schema.validator().is_valid(document)


def test_float_seeds_never_reach_the_planner(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "experiments" / "a.yaml").write_text(HEAD + "seeds: [0.0, 1.0]\n")
    code, out = _run(capsys, "plan", "--backend", "memory", "--no-color")
    assert code == 1
    assert "experiments/a.yaml:5:9: seeds[0]: expected an integer" in out
    assert "s0.0" not in out and "internal error" not in out


# --- 13: patterns match the whole text ----------------------------------------------------------


def _patterns(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str):
            yield node["pattern"]
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


PATTERNS = sorted(set(_patterns(schema.schema())))
ANCHORED = [p for p in PATTERNS if "$" in p]


def test_every_pattern_with_an_end_anchor_anchors_the_whole_text() -> None:
    """The reference below (``re.fullmatch``) is ECMA-262's meaning only for ``^...$``."""
    assert ANCHORED
    assert all(p.startswith("^") and p.endswith("$") and p.count("$") == 1 for p in ANCHORED)


@settings(max_examples=200, deadline=None)
@given(
    case=st.sampled_from(ANCHORED).flatmap(
        lambda p: st.tuples(st.just(p), st.from_regex(p, fullmatch=True))
    ),
    tail=st.sampled_from(["\n", "\n\n", "", "\r\n"]),
)
def test_each_schema_pattern_against_a_trailing_newline(case: tuple[str, str], tail: str) -> None:
    """``$`` is the end of the text (ECMA-262), as editors have it, not "before a final
    newline" as in Python's ``re``: a value matches only if the whole of it does."""
    pattern, value = case
    text = value + tail
    assert bool(ecma_regex(pattern).search(text)) == bool(re.fullmatch(pattern, text))
    if tail == "\n" and re.fullmatch(pattern, text) is None:
        fast = schema._fast_check()
        assert fast is not None
        assert ecma_regex(pattern).search(text) is None


@pytest.mark.parametrize(
    "data",
    [
        {"name": "nl\n"},
        {"container": "HelloWorld\n"},
        {"tags": {"team\n": "x"}},
        {"params": {"lr\n": 1}},
        {"tracking": {"experiment": "exp\n"}},
        {"compute": {"target": "local\n"}},
        {"compute": {"shm_size": "16g\n"}},
        {"compute": {"max_run_duration": "12h\n"}},
        {"datasets": [{"azure": "panda:3\n"}]},
        {"checkpoint": {"source": {"run": "r-s0-1234abcd\n"}}},
        {"checkpoint": {"source": {"experiment": "pre\n"}}},
        {"checkpoint": {"source": {"url": "https://x.org/m.ckpt\n"}}},
    ],
)
def test_a_trailing_newline_is_refused_by_both_checkers(data: dict[str, Any]) -> None:
    document: dict[str, Any] = {
        "apiVersion": "himl/v1",
        "kind": "Experiment",
        "name": "x",
        "container": "C",
    }
    document.update(data)
    fast = schema._fast_check()
    assert fast is not None and not fast(document)
    assert not schema.validator().is_valid(document)
    assert schema.problems(document)


def test_a_name_with_a_trailing_newline_makes_no_run(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "experiments" / "a.yaml").write_text(HEAD.replace("name: bad", 'name: "nl\\n"'))
    code, out = _run(capsys, "plan", "--backend", "memory", "--no-color")
    assert code == 1
    assert 'experiments/a.yaml:4:7: name: invalid value "nl\\n"' in out


# --- 15: many problems in one file ---------------------------------------------------------------


def test_ten_thousand_problems_give_ten_thousand_diagnostics_at_their_lines(repo: Path) -> None:
    count = 10_000
    lines = [f"unknown_key_{i}: {i}" for i in range(count)]
    (repo / "experiments" / "many.yaml").write_text(HEAD + "\n".join(lines) + "\n")
    result = validate_paths([Path("experiments")])
    assert len(result.diagnostics) == count
    by_path = {d.path: (d.line, d.column, d.message) for d in result.diagnostics}
    assert len(by_path) == count
    for i in range(count):
        assert by_path[f"unknown_key_{i}"] == (5 + i, 1, "unknown key")


def test_many_problems_in_nested_mappings_and_lists_are_each_located(repo: Path) -> None:
    lines = ["trainer:"] + [f"  option_{i}: {i}" for i in range(300)]
    lines += ["datasets:"] + [f"  - {{local: d{i}, extra_{i}: 1}}" for i in range(300)]
    (repo / "experiments" / "nested.yaml").write_text(HEAD + "\n".join(lines) + "\n")
    result = validate_paths([Path("experiments")])
    found = {d.path: (d.line, d.column) for d in result.diagnostics}
    for i in range(300):
        assert found[f"trainer.option_{i}"] == (6 + i, 3)
        assert found[f"datasets[{i}].extra_{i}"] == (307 + i, 5 + len(f"{{local: d{i}, "))


# --- 16: plan validates before it opens a store --------------------------------------------------


@pytest.mark.parametrize("uri", [None, "tracking-uri"])
def test_plan_on_invalid_manifests_creates_no_store(
    repo: Path,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    uri: str | None,
) -> None:
    (repo / "experiments" / "a.yaml").write_text(HEAD + "seeds: [1,\n")
    elsewhere = tmp_path_factory.mktemp("store")
    args = ["plan", "--no-color"]
    if uri is not None:
        args += ["--tracking-uri", f"sqlite:///{elsewhere / 'x.db'}"]
    code, out = _run(capsys, *args)
    assert code == 1
    assert "experiments/a.yaml:6:1: YAML syntax error" in out
    assert not list(repo.rglob("*.db")) and not list(elsewhere.iterdir())
    assert not (repo / "mlruns").exists()
