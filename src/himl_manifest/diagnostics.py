"""Diagnostics are data: collected across all files, rendered once (text, JSON, GitHub)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

#: Version of the ``--format json`` output of ``himl validate``; bumped on incompatible changes.
JSON_FORMAT_VERSION = 1


@dataclass(frozen=True, order=True)
class Diagnostic:
    """One problem in one file. ``line``/``column`` are 1-based; 0 means "unknown"."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str = ""
    code: str = "schema"
    #: "error" (the manifest is invalid) or "warning" (valid, but worth a look: exit 0).
    severity: str = "error"

    def location(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


def close_matches(word: str, candidates: Iterable[str], *, n: int = 1) -> list[str]:
    """Up to ``n`` of ``candidates`` close to ``word``, closest first (difflib, cutoff 0.6);
    failing those, the one that differs from ``word`` in case only."""
    import difflib  # not needed on start-up

    choices = list(candidates)
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in choices}
        if word.lower() in lowered:
            close = [lowered[word.lower()]]
    return close


def did_you_mean(word: str, candidates: Iterable[str], *, n: int = 1) -> str:
    """``did you mean 'x'?`` (``'x', 'y'?`` with ``n`` > 1) for the candidates closest to
    ``word``, or an empty string: the one spelling hint of every command."""
    close = close_matches(word, candidates, n=n)
    return f"did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def errors_of(diagnostics: Iterable[Diagnostic]) -> list[Diagnostic]:
    """The diagnostics that make a manifest invalid (warnings do not)."""
    return [d for d in diagnostics if d.severity != "warning"]


def render_text(diagnostics: Sequence[Diagnostic], files_checked: int) -> str:
    lines = []
    for d in diagnostics:
        where = f"{d.path}: " if d.path else ""
        hint = f" ({d.hint})" if d.hint else ""
        level = "warning: " if d.severity == "warning" else ""
        lines.append(f"{d.location()}: {level}{where}{d.message}{hint}")
    errors = errors_of(diagnostics)
    n, warnings = len(errors), len(diagnostics) - len(errors)
    bad_files = len({d.file for d in errors})
    also = f", {warnings} warning{'s' if warnings != 1 else ''}" if warnings else ""
    if n:
        lines.append(
            f"{n} problem{'s' if n != 1 else ''} in {bad_files} of {files_checked} "
            f"file{'s' if files_checked != 1 else ''}{also}."
        )
    else:
        lines.append(f"{files_checked} file{'s' if files_checked != 1 else ''} valid{also}.")
    return "\n".join(lines)


def render_json(diagnostics: Sequence[Diagnostic], files_checked: int) -> str:
    payload = {
        "version": JSON_FORMAT_VERSION,
        "valid": not errors_of(diagnostics),
        "files_checked": files_checked,
        "diagnostics": [asdict(d) for d in diagnostics],
    }
    return json.dumps(payload, indent=2, sort_keys=False)


def _gh_escape(value: str, *, prop: bool = False) -> str:
    value = value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        value = value.replace(":", "%3A").replace(",", "%2C")
    return value


def render_github(diagnostics: Iterable[Diagnostic], files_checked: int) -> str:
    """GitHub Actions workflow commands: one ``::error`` annotation per diagnostic."""
    lines = []
    for d in diagnostics:
        props = [f"file={_gh_escape(d.file, prop=True)}"]
        if d.line:
            props += [f"line={d.line}", f"col={d.column}"]
        props.append(f"title={_gh_escape('himl validate: ' + (d.path or d.code), prop=True)}")
        hint = f" ({d.hint})" if d.hint else ""
        lines.append(f"::{d.severity} {','.join(props)}::{_gh_escape(d.message + hint)}")
    return "\n".join(lines)


RENDERERS = {"text": render_text, "json": render_json, "github": render_github}
