"""`himl validate --check-imports`: does each manifest's container class exist and import?

This imports user code (it is opt-in); plain `himl validate` never does.
"""

from __future__ import annotations

from collections.abc import Iterable

from himl_manifest.diagnostics import Diagnostic
from himl_manifest.errors import LookupFailed
from himl_manifest.manifest.loader import Document


def check_container_imports(documents: Iterable[Document]) -> list[Diagnostic]:
    """One diagnostic, at path ``container``, per document whose container cannot be found."""
    from himl_manifest.runner.lookup import find_container

    outcomes: dict[str, str | None] = {}
    diagnostics = []
    for document in documents:
        data = document.data
        name = data.get("container") if isinstance(data, dict) else None
        if not isinstance(name, str):
            continue
        if name not in outcomes:
            try:
                find_container(name)
                outcomes[name] = None
            except LookupFailed as exc:
                outcomes[name] = str(exc)
            except (Exception, SystemExit) as exc:  # user code may raise or exit anything
                outcomes[name] = f"importing {name!r} failed: {type(exc).__name__}: {exc}"
        message = outcomes[name]
        if message is None:
            continue
        line, column = document.file.position(document.index, ["container"])
        diagnostics.append(
            Diagnostic(document.file.display, line, column, "container", message, code="import")
        )
    return diagnostics
