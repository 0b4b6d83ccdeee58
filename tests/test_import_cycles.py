"""No import cycle between any two modules of the package, and the runner never imports the
`himl` CLI package. Imports inside functions and under ``TYPE_CHECKING`` count too (grimp sees
them). The layer contracts themselves are import-linter's (``[tool.importlinter]`` in
pyproject.toml, run by `make test`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grimp
import pytest

RUNNER = "himl_manifest.runner"


@pytest.fixture(scope="module")
def graph() -> Any:
    return grimp.build_graph("himl_manifest", cache_dir=None, exclude_type_checking_imports=False)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in edges:
        if node not in index:
            visit(node)
    return found


def _runner_modules(graph: Any) -> Iterable[str]:
    return sorted(m for m in graph.modules if m.startswith(RUNNER + "."))


def test_no_import_cycles_between_modules(graph: Any) -> None:
    modules = set(graph.modules)
    edges = {m: graph.find_modules_directly_imported_by(m) & modules for m in modules}
    assert _cycles(edges) == []


def test_the_runner_does_not_import_the_cli_package(graph: Any) -> None:
    found = {
        (module, imported)
        for module in _runner_modules(graph)
        for imported in graph.find_modules_directly_imported_by(module)
        if imported == "himl_manifest.cli" or imported.startswith("himl_manifest.cli.")
    }
    assert found == set()
