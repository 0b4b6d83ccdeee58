"""Hostile or broken input: one clear diagnostic per file, exit 1, bounded time, no traceback."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.manifest import loader, yaml_bounds
from himl_manifest.manifest.loader import MAX_FILE_BYTES, load_file
from himl_manifest.manifest.validate import validate_paths
from himl_manifest.manifest.yaml_bounds import MAX_DEPTH, MAX_NODES

GOOD = "apiVersion: himl/v1\nkind: Experiment\nname: good\ncontainer: HelloWorld\n"
_PURE_STRICT = yaml_bounds.strict_loader(yaml.SafeLoader)


@pytest.fixture(autouse=True, params=["libyaml", "python"])
def yaml_build(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Every test runs with libyaml's parser (where PyYAML has it) and with the pure Python one:
    the bounds must hold whatever the build."""
    if request.param == "libyaml":
        if not hasattr(yaml, "CSafeLoader"):
            pytest.skip("PyYAML built without libyaml")
    else:
        monkeypatch.setattr(loader, "_Loader", yaml.SafeLoader)
        monkeypatch.setattr(loader, "_StrictLoader", _PURE_STRICT)
    yield request.param


def _messages(*paths: Path) -> list[str]:
    result = validate_paths(list(paths))
    return [f"{d.location()}: {d.message}" for d in result.diagnostics]


def _one(path: Path) -> str:
    found = _messages(path)
    assert len(found) == 1, found
    return found[0]


def test_alias_bomb_is_refused_quickly(repo: Path) -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        refs = ", ".join([f"*{chr(96 + level)}"] * 10)
        lines.append(f"{chr(97 + level)}: &{chr(97 + level)} [{refs}]")
    bomb = repo / "experiments" / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    start = time.perf_counter()
    message = _one(bomb)
    assert time.perf_counter() - start < 2
    assert message == (
        f"experiments/bomb.yaml:1:1: aliases expand to too many values: refused (limit {MAX_NODES})"
    )


def test_huge_file_is_refused_without_reading_it_all(repo: Path) -> None:
    huge = repo / "experiments" / "huge.yaml"
    with open(huge, "w") as handle:
        handle.write("description: '")
        handle.write("x" * (MAX_FILE_BYTES * 4))
        handle.write("'\n")
    start = time.perf_counter()
    assert (
        _one(huge) == "experiments/huge.yaml: file too large: over 256 KiB (a manifest is a few KB)"
    )
    assert time.perf_counter() - start < 1


def test_many_values_under_the_size_limit_are_refused_in_bounded_time(
    repo: Path, yaml_build: str
) -> None:
    many = repo / "experiments" / "many.yaml"
    many.write_text("params: {k: [" + "1," * (MAX_NODES + 10) + "]}\n")
    assert many.stat().st_size <= MAX_FILE_BYTES
    start = time.perf_counter()
    assert _one(many) == f"experiments/many.yaml:1:1: too many values: over {MAX_NODES} in one file"
    assert time.perf_counter() - start < (3 if yaml_build == "libyaml" else 10)  # pure Python: slow


TOO_DEEP = f"nesting too deep: over {MAX_DEPTH} levels of lists and mappings"
#: Text nesting ``depth`` levels below a top-level mapping (or, for "block-key", from the top),
#: and where the first level over MAX_DEPTH starts (the top-level mapping is level 1).
NESTINGS = {
    "flow-list": (lambda n: "params: " + "[" * n + "]" * n + "\n", "1:108"),
    "flow-map": (lambda n: "params: " + "{" * n + "}" * n + "\n", "1:108"),
    "flow-pairs": (lambda n: "params: " + "[a: " * (n // 2) + "]" * (n // 2) + "\n", "1:206"),
    "flow-mixed": (lambda n: "params: " + "[{" * (n // 2) + "}]" * (n // 2) + "\n", "1:108"),
    "block-list": (lambda n: "params:\n" + "- " * n + "x\n", "2:199"),
    "block-key": (lambda n: "? " * n + "x\n", "1:201"),
    "block-mixed": (lambda n: "- ? " * (n // 2) + "x\n", "1:201"),
    "block-flow": (lambda n: "params:\n" + "- " * 50 + "[" * n + "]" * n + "\n", "2:150"),
}


@pytest.mark.parametrize("depth", [1_000, 20_000, 100_000])
@pytest.mark.parametrize("kind", sorted(NESTINGS))
def test_deep_nesting(repo: Path, kind: str, depth: int) -> None:
    make, where = NESTINGS[kind]
    deep = repo / "experiments" / "deep.yaml"
    deep.write_text(make(depth))
    assert deep.stat().st_size <= MAX_FILE_BYTES
    start = time.perf_counter()
    assert _messages(deep) == [f"experiments/deep.yaml:{where}: {TOO_DEEP}"]
    assert time.perf_counter() - start < 5


def test_deep_block_indentation(repo: Path) -> None:
    deep = repo / "experiments" / "deep.yaml"
    deep.write_text("".join(" " * level + "a:\n" for level in range(600)) + " " * 600 + "x\n")
    assert _one(deep) == f"experiments/deep.yaml:{MAX_DEPTH + 1}:{MAX_DEPTH + 1}: {TOO_DEEP}"


@pytest.mark.parametrize(
    "nesting",
    [
        "  x: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2),
        "  x:\n"
        + "".join(" " * (4 + 2 * n) + "-\n" for n in range(MAX_DEPTH - 2))
        + " " * (2 * MAX_DEPTH)
        + "1",
    ],
    ids=["flow", "block"],
)
def test_nesting_up_to_the_bound_is_loaded(
    repo: Path, nesting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """MAX_DEPTH levels load; every later check (schema, positions) copes with them."""
    (repo / "experiments" / "deep.yaml").write_text(GOOD + "params:\n" + nesting + "\n")
    loaded = load_file(repo / "experiments" / "deep.yaml")
    assert loaded.diagnostics == [] and len(loaded.documents) == 1
    assert run_cli(cli, ["validate"]) == 1  # params values are scalars or lists of scalars
    out, err = capsys.readouterr()
    assert "nesting too deep" not in out and "internal error" not in out + err
    assert out.startswith("experiments/deep.yaml:")


def test_cli_too_deep_exit_1_and_no_traceback(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "experiments" / "deep.yaml").write_text("a: " + "[" * 20_000 + "]" * 20_000 + "\n")
    assert run_cli(cli, ["validate"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in out + err
    assert out.splitlines() == [
        f"experiments/deep.yaml:1:103: {TOO_DEEP}",
        "1 problem in 1 of 1 file.",
    ]


def _alias_chain(links: int, depth: int) -> str:
    """Each anchor nests ``depth`` lists around an alias of the one before."""
    lines = [f"a0: &a0 {'[' * depth}{']' * depth}"]
    lines += [f"a{i}: &a{i} {'[' * depth}*a{i - 1}{']' * depth}" for i in range(1, links)]
    return "\n".join(lines) + "\n"


def test_nesting_through_aliases(repo: Path) -> None:
    shallow = repo / "experiments" / "shallow.yaml"
    shallow.write_text(_alias_chain(3, 30))  # 1 + 3 * 30 levels once expanded
    assert all("nesting" not in m for m in _messages(shallow))
    deep = repo / "experiments" / "deep.yaml"
    deep.write_text(_alias_chain(4, 30))  # 1 + 4 * 30: the last alias goes too deep
    assert _one(deep) == (f"experiments/deep.yaml:4:39: {TOO_DEEP} once aliases are expanded")


@pytest.mark.parametrize("error", [RecursionError, MemoryError])
def test_recursion_or_memory_error_in_yaml_is_a_diagnostic(
    repo: Path, monkeypatch: pytest.MonkeyPatch, error: type[BaseException]
) -> None:
    """Should PyYAML still recurse too deep or run out of memory, the file gets a diagnostic."""

    def give_up(*args: object, **kwargs: object) -> None:
        raise error()

    monkeypatch.setattr(loader.yaml, "load_all", give_up)
    (repo / "experiments" / "x.yaml").write_text(GOOD)
    why = "nesting too deep" if error is RecursionError else "too large"
    assert _one(repo / "experiments" / "x.yaml") == (
        f"experiments/x.yaml: YAML {why}: the YAML library gave up ({error.__name__})"
    )


_PIECES = ["- ", "? ", ": ", "a", "b: ", "a:\n", "[", "]", "{", "}", ", ", "[a: ", "- - ", "? - "]
_PIECES += ["\n", " ", "  ", "\n  ", "\n    - ", "\t", "&x ", "*x", "\r", "\ufeff", "\u2028"]
_PIECES += ["# c", "'q'", '"q"', "|\n", "--- ", "...\n", "-\n"]


def test_cheap_depth_bound_never_underestimates(yaml_build: str) -> None:
    """Where the cheap bound clears a text, the parser's events never nest deeper than it."""
    parser = loader._Loader
    rng = random.Random(20240601)
    cleared = 0
    for _ in range(3_000):
        text = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 30)))
        for limit in (2, 3, 4, 6):
            if yaml_bounds.may_nest_deeper(text, limit):
                continue
            depth = deepest = 0
            try:
                for event in yaml.parse(text, Loader=parser):
                    if isinstance(event, yaml.CollectionStartEvent):
                        depth += 1
                        deepest = max(deepest, depth)
                    elif isinstance(event, yaml.CollectionEndEvent):
                        depth -= 1
            except yaml.YAMLError:
                continue
            cleared += 1
            assert deepest <= limit, (limit, text)
    assert cleared > 100


def test_non_utf8_bytes(repo: Path) -> None:
    binary = repo / "experiments" / "binary.yaml"
    binary.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    assert _one(binary) == (
        "experiments/binary.yaml:2:17: not UTF-8 text: byte 0xe9 at offset 25 cannot be decoded"
    )


def test_random_binary_file(repo: Path) -> None:
    binary = repo / "experiments" / "random.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "not UTF-8 text" in _one(binary) or "NUL character" in _one(binary)


def test_nul_character(repo: Path) -> None:
    nul = repo / "experiments" / "nul.yaml"
    nul.write_text("name: a\nkind: \x00\n")
    assert _one(nul) == "experiments/nul.yaml:2:1: NUL character: not a text file"


def test_empty_file(repo: Path) -> None:
    (repo / "experiments" / "empty.yaml").write_text("")
    assert _one(Path("experiments/empty.yaml")) == (
        "experiments/empty.yaml:1:1: empty file: no manifest in it"
    )


def test_folder_without_manifests(repo: Path) -> None:
    (repo / "experiments" / "notes.txt").write_text("hi")
    assert _one(Path("experiments")) == "experiments: no manifests (*.yaml, *.yml) in this folder"


def test_missing_path(repo: Path) -> None:
    assert _one(Path("nowhere.yaml")) == "nowhere.yaml: no such file or folder"


def test_dangling_symlink(repo: Path) -> None:
    (repo / "experiments" / "gone.yaml").symlink_to("deleted.yaml")
    assert _one(Path("experiments")) == (
        "experiments/gone.yaml: broken symbolic link: its target 'deleted.yaml' does not exist"
    )


def test_directory_named_like_a_manifest_given_explicitly(repo: Path) -> None:
    (repo / "experiments" / "x.yaml").mkdir()
    assert _one(Path("experiments/x.yaml")) == (
        "experiments/x.yaml: no manifests (*.yaml, *.yml) in this folder"
    )
    loaded = load_file(repo / "experiments" / "x.yaml", "x.yaml")
    assert [d.message for d in loaded.diagnostics] == ["a folder, not a manifest file"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_does_not_block(repo: Path) -> None:
    os.mkfifo(repo / "experiments" / "pipe.yaml")
    assert _one(Path("experiments")) == (
        "experiments/pipe.yaml: not a regular file (a pipe, socket or device?)"
    )


def test_file_symlink_loop(repo: Path) -> None:
    (repo / "experiments" / "a.yaml").symlink_to("b.yaml")
    (repo / "experiments" / "b.yaml").symlink_to("a.yaml")
    assert _messages(Path("experiments")) == [
        "experiments/a.yaml: symbolic link loop: the link never reaches a file",
        "experiments/b.yaml: symbolic link loop: the link never reaches a file",
    ]


def test_directory_symlink_loop_is_walked_once(repo: Path) -> None:
    (repo / "experiments" / "good.yaml").write_text(GOOD)
    (repo / "experiments" / "sub").mkdir()
    (repo / "experiments" / "sub" / "up").symlink_to("..")
    (repo / "experiments" / "self").symlink_to(".")
    result = validate_paths([Path("experiments")])
    assert result.ok
    assert len(result.files) == 1


def test_same_file_twice_is_read_once(repo: Path) -> None:
    (repo / "experiments" / "good.yaml").write_text(GOOD)
    (repo / "experiments" / "alias.yaml").symlink_to("good.yaml")
    result = validate_paths([Path("experiments"), Path("experiments/good.yaml")])
    assert result.ok and len(result.files) == 1


def test_cli_bad_input_exit_1_and_no_traceback(
    repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (repo / "experiments" / "bad.yaml").write_bytes(b"\x80\x81")
    (repo / "experiments" / "tag.yaml").write_text("a: !!python/name:os.system ''\n")
    assert run_cli(cli, ["validate"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert out.splitlines() == [
        "experiments/bad.yaml:1:1: not UTF-8 text: byte 0x80 at offset 0 cannot be decoded",
        "experiments/tag.yaml:1:4: unsupported YAML tag '!!python/name:os.system': "
        "manifests hold plain data only",
        "2 problems in 2 of 2 files.",
    ]


def test_user_code_is_never_run_by_yaml(repo: Path) -> None:
    marker = repo / "pwned"
    payload = f"a: !!python/object/apply:os.system ['touch {marker}']\n"
    (repo / "experiments" / "evil.yaml").write_text(payload)
    assert not validate_paths([Path("experiments")]).ok
    assert not marker.exists()
