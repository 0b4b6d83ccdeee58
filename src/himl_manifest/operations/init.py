"""`himl init`: scaffold a user's repository for himl-manifest.

What it writes (the templates are package data, ``himl_manifest/templates/``):

==================================  =========================================================
``experiments/hello-world.yaml``    an example manifest (the shipped HelloWorld container),
                                    with a modeline pointing editors at the schema below
``schema/experiment.v1.schema.json``  the manifest schema, the bytes ``himl schema`` prints
``.gitignore``                      the run store and outputs, appended line by line
``.pre-commit-config.yaml``         the ``himl-validate`` hook, ``rev: v<this version>``
``.github/workflows/himl.yml``      validate and plan on pull requests, apply on main, and a
                                    drift check (docs/gitops.md)
==================================  =========================================================

Pure file writing: nothing here imports torch, Lightning, MLflow or the Azure SDK. A file that
already holds exactly what would be written is left alone, so running init twice changes
nothing; a file that holds something else is a conflict, and nothing at all is written unless
``force`` says to overwrite.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata, resources
from pathlib import Path

from himl_manifest import __version__
from himl_manifest.errors import HimlError
from himl_manifest.manifest.schema import SCHEMA_FILE, schema_text

#: Where the hook's repository is named when this installation's metadata names none.
PLACEHOLDER_REPOSITORY = "https://github.com/<owner>/himl-manifest"
#: Labels of the package's ``Project-URL`` metadata naming its source repository, best first.
_REPOSITORY_LABELS = ("repository", "source", "source code", "homepage")
_DISTRIBUTION = "himl-manifest"
_TEMPLATES = "templates"


class InitConflict(HimlError):
    """Files exist with other content, and overwriting them was not asked for."""

    def __init__(self, root: Path, paths: Sequence[str]) -> None:
        listed = "".join(f"\n  {root / path}" for path in paths)
        super().__init__(
            f"himl init would overwrite {len(paths)} file(s) that hold something else:{listed}\n"
            "Nothing was written. Pass --force to overwrite them (.gitignore is only ever "
            "appended to)."
        )
        self.paths = tuple(paths)


class Outcome(str, Enum):
    CREATED = "created"
    OVERWRITTEN = "overwritten"
    APPENDED = "appended"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Scaffold:
    """One file init writes: its path under the root, its content, and how it is written."""

    path: str
    content: str
    append_lines: bool = False  # .gitignore: add the missing lines, never replace the file


@dataclass(frozen=True)
class InitResult:
    root: Path
    outcomes: tuple[tuple[str, Outcome], ...]
    repository: str
    #: Lines appended to .gitignore (empty when it already had them all).
    ignored: tuple[str, ...] = field(default=())

    @property
    def changed(self) -> list[str]:
        return [path for path, outcome in self.outcomes if outcome != Outcome.UNCHANGED]


def template(name: str) -> str:
    """A template shipped in ``himl_manifest/templates/``."""
    return resources.files("himl_manifest").joinpath(_TEMPLATES, name).read_text("utf-8")


def hook_repository() -> str:
    """The URL of himl-manifest's repository, from this installation's ``Project-URL``
    metadata (``[project.urls]``); a placeholder to edit when it names none."""
    try:
        urls = metadata.metadata(_DISTRIBUTION).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        urls = []
    by_label: dict[str, str] = {}
    for entry in urls:
        label, _, url = entry.partition(",")
        by_label.setdefault(label.strip().lower(), url.strip())
    for label in _REPOSITORY_LABELS:
        if by_label.get(label):
            return by_label[label]
    return PLACEHOLDER_REPOSITORY


def _filled(text: str, repository: str) -> str:
    values = {"@HIML_VERSION@": __version__, "@HIML_REPOSITORY@": repository}
    for token, value in values.items():
        text = text.replace(token, value)
    return text


def scaffolds(repository: str) -> list[Scaffold]:
    """Every file init writes, with its content for this version of himl-manifest."""
    return [
        Scaffold("experiments/hello-world.yaml", template("hello-world.yaml")),
        Scaffold(f"schema/{SCHEMA_FILE}", schema_text()),
        Scaffold(".gitignore", template("gitignore.txt"), append_lines=True),
        Scaffold(
            ".pre-commit-config.yaml", _filled(template("pre-commit-config.yaml"), repository)
        ),
        Scaffold(".github/workflows/himl.yml", _filled(template("workflow.yml"), repository)),
    ]


def missing_lines(existing: str, wanted: str) -> list[str]:
    """The lines of ``wanted`` that ``existing`` lacks (compared without surrounding blanks);
    a comment line only comes along with at least one missing entry."""
    have = {line.strip() for line in existing.splitlines()}
    entries = [line for line in wanted.splitlines() if line.strip() and line.strip() not in have]
    if all(line.lstrip().startswith("#") for line in entries):
        return []
    return entries


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise HimlError(f"himl init cannot use {path}: {exc}") from exc


def _appended(existing: str, lines: Sequence[str]) -> str:
    prefix = existing if not existing or existing.endswith("\n") else existing + "\n"
    separator = "\n" if prefix.strip() else ""
    return prefix + separator + "".join(f"{line}\n" for line in lines)


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def init(root: Path, *, force: bool = False, repository: str | None = None) -> InitResult:
    """Write the scaffold into ``root`` (created if missing). Raises :class:`InitConflict`,
    having written nothing, when a file exists with other content and ``force`` is false."""
    root = root.absolute()
    if root.exists() and not root.is_dir():
        raise HimlError(f"himl init: {root} is not a folder")
    repository = repository or hook_repository()
    planned: list[tuple[Scaffold, str | None]] = [
        (item, _read(root / item.path)) for item in scaffolds(repository)
    ]
    conflicts = [
        item.path
        for item, existing in planned
        if existing is not None and not item.append_lines and existing != item.content
    ]
    if conflicts and not force:
        raise InitConflict(root, conflicts)
    outcomes: list[tuple[str, Outcome]] = []
    ignored: tuple[str, ...] = ()
    for item, existing in planned:
        target = root / item.path
        if item.append_lines:
            lines = missing_lines(existing or "", item.content)
            if lines:
                _write_atomically(target, _appended(existing or "", lines))
                ignored = tuple(line for line in lines if not line.lstrip().startswith("#"))
            outcome = (
                Outcome.UNCHANGED
                if not lines
                else Outcome.CREATED
                if existing is None
                else Outcome.APPENDED
            )
        elif existing == item.content:
            outcome = Outcome.UNCHANGED
        else:
            _write_atomically(target, item.content)
            outcome = Outcome.CREATED if existing is None else Outcome.OVERWRITTEN
        outcomes.append((item.path, outcome))
    return InitResult(root, tuple(outcomes), repository, ignored)
