"""Hostile or broken input: one clear diagnostic per file, exit 1, bounded time, no traceback."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from himl_manifest.cli.main import cli, run_cli
from himl_manifest.manifest.loader import MAX_FILE_BYTES, MAX_NODES, load_file
from himl_manifest.manifest.validate import validate_paths

GOOD = "apiVersion: himl/v1\nkind: Experiment\nname: good\ncontainer: HelloWorld\n"


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


def test_many_values_under_the_size_limit_are_refused_in_bounded_time(repo: Path) -> None:
    many = repo / "experiments" / "many.yaml"
    many.write_text("params: {k: [" + "1," * (MAX_NODES + 10) + "]}\n")
    assert many.stat().st_size <= MAX_FILE_BYTES
    start = time.perf_counter()
    assert _one(many) == f"experiments/many.yaml:1:1: too many values: over {MAX_NODES} in one file"
    assert time.perf_counter() - start < 3


@pytest.mark.parametrize("depth", [200, 20_000])
def test_deep_nesting(repo: Path, depth: int) -> None:
    deep = repo / "experiments" / "deep.yaml"
    deep.write_text("params: " + "[" * depth + "]" * depth + "\n")
    found = _messages(deep)
    assert found and all(m.startswith("experiments/deep.yaml:") for m in found)
    if depth > 1000:  # libyaml's own limit: one diagnostic, before any Python recursion
        assert found == [
            "experiments/deep.yaml:1:1008: YAML syntax error: exceeded maximum nesting depth "
            "(while increasing flow level)"
        ]


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
