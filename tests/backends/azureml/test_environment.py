"""The conda file of an Azure ML job: pip includes inlined, problems with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from himl_manifest.backends.azureml.environment import conda_environment, resolve_conda_file
from himl_manifest.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def conda(pip: str) -> str:
    return f"name: env\ndependencies:\n  - python=3.11\n  - pip:\n{pip}"


def test_includes_are_inlined_relative_to_the_file_that_names_them(tmp_path: Path) -> None:
    env = write(tmp_path / "environment.yml", conda("      - -r reqs/base.txt\n      - click\n"))
    write(
        tmp_path / "reqs" / "base.txt",
        "# base\ntorch==2.13.0  # pinned\n--requirement=extra/more.txt\n\n"
        "--extra-index-url https://example.org/simple\n",
    )
    write(
        tmp_path / "reqs" / "extra" / "more.txt",
        "numpy>=1.26 \\\n  ; python_version>'3'\n-rdup.txt\n",
    )
    write(tmp_path / "reqs" / "extra" / "dup.txt", "pyyaml\n")
    resolved = resolve_conda_file(env, root=tmp_path)
    assert resolved.problems == []
    assert resolved.pip_requirements == [
        "torch==2.13.0",
        "numpy>=1.26   ; python_version>'3'",
        "pyyaml",
        "--extra-index-url https://example.org/simple",
        "click",
    ]
    assert resolved.data is not None
    assert resolved.data["name"] == "env"
    assert resolved.data["dependencies"][0] == "python=3.11"
    assert [p.name for p in resolved.files] == [
        "environment.yml",
        "base.txt",
        "more.txt",
        "dup.txt",
    ]


def test_a_file_included_twice_is_read_once(tmp_path: Path) -> None:
    env = write(tmp_path / "environment.yml", conda("      - -r a.txt\n      - -r b.txt\n"))
    write(tmp_path / "a.txt", "-r common.txt\nalpha\n")
    write(tmp_path / "b.txt", "-r common.txt\nbeta\n")
    write(tmp_path / "common.txt", "shared\n")
    assert conda_environment(env)["dependencies"][1]["pip"] == ["shared", "alpha", "beta"]


def test_every_problem_at_once_with_file_and_line(tmp_path: Path) -> None:
    env = write(
        tmp_path / "environment.yml",
        conda("      - -r a.txt\n      - -e .\n      - -r nowhere.txt\n      - ./local-pkg\n"),
    )
    write(tmp_path / "a.txt", "ok\n-r b.txt\n-c constraints.txt\n")
    write(tmp_path / "b.txt", "\n\n-r a.txt\n")
    problems = resolve_conda_file(env, root=tmp_path).problems
    got = [(d.file, d.line, d.message.split(":")[0]) for d in problems]
    assert got == [
        ("b.txt", 3, "requirements include cycle"),
        ("a.txt", 3, "constraints files (-c) cannot be used in an Azure ML environment"),
        (
            "environment.yml",
            6,
            "'-e .' installs from a local path, which the Azure ML image build cannot see",
        ),
        ("environment.yml", 7, "included requirements file not found"),
        (
            "environment.yml",
            8,
            "'./local-pkg' installs from a local path, which the Azure ML image build cannot see",
        ),
    ]
    assert "environment.yml -> a.txt -> b.txt -> a.txt" in problems[0].message
    with pytest.raises(ConfigError) as caught:
        conda_environment(env, root=tmp_path)
    assert "b.txt:3:1" in str(caught.value)
    assert "environment.yml:7:1" in str(caught.value)


def test_unreadable_and_malformed_conda_files(tmp_path: Path) -> None:
    missing = resolve_conda_file(tmp_path / "environment.yml")
    assert missing.data is None
    assert "cannot read" in missing.problems[0].message
    bad = write(tmp_path / "bad.yml", "name: x\ndependencies: [a\n")
    (problem,) = resolve_conda_file(bad).problems
    assert problem.message.startswith("not valid YAML")
    assert problem.line >= 2
    scalar = write(tmp_path / "scalar.yml", "just text\n")
    assert "must be a mapping" in resolve_conda_file(scalar).problems[0].message


def test_a_conda_file_without_pip_is_returned_as_is(tmp_path: Path) -> None:
    env = write(
        tmp_path / "environment.yml", "name: env\ndependencies:\n  - python=3.11\n  - numpy\n"
    )
    assert conda_environment(env) == {"name": "env", "dependencies": ["python=3.11", "numpy"]}


def test_the_repository_conda_file_resolves() -> None:
    root = Path(__file__).resolve().parents[3]
    data = conda_environment(root / "environment.yml", root=root)
    assert any(isinstance(d, dict) and "pip" in d for d in data["dependencies"])
