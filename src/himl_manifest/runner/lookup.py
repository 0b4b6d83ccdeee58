"""Find a LightningContainer class by name, as `himl-runner --model=...` and manifests name it.

- ``Name``: search every module of the default configs package, :data:`DEFAULT_NAMESPACE`;
  when it is not there, the project's own packages are searched statically (their sources
  read, not imported) and a class of that name found there is suggested in full
  (:class:`NotFound`): the name itself still means the default package, as in hi-ml.
- ``pkg.Name``: search every module under package ``pkg``, recursively.
- ``pkg.module.Name``: search that module only (or, when it is a package, everything under it).

Only modules whose source mentions ``Name`` are imported (and never instantiated), so unrelated
modules neither slow the search down nor break it. A class counts where it is *defined*
(``cls.__module__``), so re-exports are not duplicates. Failures raise
:class:`~himl_manifest.errors.LookupFailed`: a module that fails to import is reported with its
own error; several definitions list every module; nothing found suggests close names.

The current working directory is put on ``sys.path`` so that packages of the user's repository
are found. Importing this module does not import torch or Lightning (user modules may).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import pkgutil
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from himl_manifest.diagnostics import close_matches
from himl_manifest.errors import LookupFailed
from himl_manifest.manifest.container_source import DEFAULT_NAMESPACE, find_class_definitions
from himl_manifest.paths import project_root
from himl_manifest.runner.container import LightningContainer

__all__ = ["DEFAULT_NAMESPACE", "NotFound", "ensure_importable", "find_container"]
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_CLASS_DEF = re.compile(r"^[ \t]*class[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)

logger = logging.getLogger(__name__)


class NotFound(LookupFailed):
    """No class of that name where the name says; ``elsewhere`` lists the containers of that
    class name the project's own packages define (``myproj.models.BlobsClassifier``), so that
    each front end can suggest one in its own spelling (``--model=...``, ``container: ...``)."""

    def __init__(self, message: str, name: str, elsewhere: list[str]) -> None:
        self.base_message = message
        self.name = name
        self.elsewhere = elsewhere
        super().__init__(self.suggest(lambda qualified: repr(qualified)))

    def suggest(self, spell: Callable[[str], str]) -> str:
        """The message, with ``did you mean <spell(candidate)>?`` for the project's classes."""
        if not self.elsewhere:
            return self.base_message
        choices = " or ".join(spell(c) for c in self.elsewhere)
        return (
            f"{self.base_message} Did you mean {choices}? (the project defines it; a bare name "
            f"is searched in {DEFAULT_NAMESPACE!r} only)"
        )


@dataclass
class _Search:
    """What one search saw: the classes named like the target, broken modules, other classes."""

    class_name: str
    found: dict[str, type] = field(default_factory=dict)  # module name -> class
    broken: dict[str, str] = field(default_factory=dict)  # module name -> error text
    broken_defining: set[str] = field(default_factory=set)  # broken modules with `class Name`
    defined: set[str] = field(default_factory=set)  # class names defined in searched sources


def ensure_importable(folder: Path | None = None) -> None:
    """Put ``folder`` (default: the working directory) at the front of ``sys.path``."""
    path = str((folder or Path.cwd()).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)


#: What importing user code may raise and the lookup reports: every exception, and the exits
#: (``sys.exit(n)``, ``raise SystemExit``) that would otherwise decide the process's exit code.
#: KeyboardInterrupt still stops the process.
IMPORT_FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit)


def _describe_import_error(module: str, exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" ({Path(last[0].filename).name}:{last[0].lineno})" if last else ""
    if isinstance(exc, SystemExit):
        what = f"it called sys.exit({exc.code!r}) while being imported"
        return f"importing module {module!r} failed: {what}{where}"
    return f"importing module {module!r} failed: {type(exc).__name__}: {exc}{where}"


def _import(module: str) -> ModuleType:
    """Import ``module``; a missing module or a failing import becomes LookupFailed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
            raise LookupFailed(f"no module or package named {module!r}") from exc
        raise LookupFailed(_describe_import_error(module, exc)) from exc
    except IMPORT_FAILURES as exc:
        raise LookupFailed(_describe_import_error(module, exc)) from exc


def _source(module_name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module_name)  # imports the parent packages
    except IMPORT_FAILURES:  # ImportError, ValueError, and whatever the parents raise
        return None  # the import that follows reports a broken parent
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    try:
        return Path(spec.origin).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _submodules(package: ModuleType) -> list[str]:
    """Every module under ``package``, recursively, without importing any of them."""
    names: list[str] = []
    paths = list(getattr(package, "__path__", []))
    for info in pkgutil.iter_modules(paths, prefix=package.__name__ + "."):
        names.append(info.name)
        if info.ispkg:
            names.extend(_subpackage_modules(info.name, info.module_finder))
    return names


def _subpackage_modules(name: str, finder: object) -> list[str]:
    spec = getattr(finder, "find_spec", lambda _n: None)(name)
    locations = list(spec.submodule_search_locations or []) if spec else []
    names: list[str] = []
    for info in pkgutil.iter_modules(locations, prefix=name + "."):
        names.append(info.name)
        if info.ispkg:
            names.extend(_subpackage_modules(info.name, info.module_finder))
    return names


def _visit(search: _Search, module_name: str, module: ModuleType | None = None) -> None:
    source = _source(module_name)
    defines: list[str] = _CLASS_DEF.findall(source) if source is not None else []
    if source is not None:
        search.defined.update(defines)
        if not re.search(rf"\b{re.escape(search.class_name)}\b", source):
            return
    if module is None:
        try:
            module = importlib.import_module(module_name)
        except IMPORT_FAILURES as exc:
            search.broken[module_name] = _describe_import_error(module_name, exc)
            if search.class_name in defines:
                search.broken_defining.add(module_name)
            return
    candidate = vars(module).get(search.class_name)
    if inspect.isclass(candidate) and candidate.__module__ == module_name:
        search.found[module_name] = candidate


def _search(root: ModuleType, class_name: str) -> _Search:
    search = _Search(class_name)
    _visit(search, root.__name__, root)
    if hasattr(root, "__path__"):
        for name in _submodules(root):
            _visit(search, name)
    return search


def _verdict(search: _Search, namespace: str, full_name: str) -> type[LightningContainer]:
    name = search.class_name
    if len(search.found) > 1:
        modules = ", ".join(sorted(search.found))
        raise LookupFailed(
            f"{name!r} is defined in {len(search.found)} modules under {namespace!r}: {modules}. "
            f"Name one of them in full, e.g. {sorted(search.found)[0]}.{name}"
        )
    if search.broken:
        # A broken module that may define the class is reported as the error it is.
        errors = "; ".join(search.broken[m] for m in sorted(search.broken))
        if not search.found or search.broken_defining:
            raise LookupFailed(f"cannot look for {full_name!r}: {errors}")
        logger.warning("while looking for %s: %s", full_name, errors)
    if not search.found:
        message = f"no class {name!r} found in {namespace!r} or its modules."
        elsewhere = _in_project(name) if full_name == name else []
        if elsewhere:
            raise NotFound(message, full_name, elsewhere)
        close = close_matches(name, sorted(search.defined), n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise NotFound(message + hint, full_name, [])
    module, found = next(iter(search.found.items()))
    if not issubclass(found, LightningContainer):
        bases = ", ".join(b.__name__ for b in found.__mro__[1:-1]) or "object"
        raise LookupFailed(
            f"{module}.{name} is not a LightningContainer subclass (its bases: {bases}); "
            "the runner can only run subclasses of himl_manifest.LightningContainer"
        )
    return found


def project_roots(start: Path | None = None) -> list[Path]:
    """Where the project's own packages live: the working directory, the project root (the
    nearest folder above with ``.git``), and the ``src/`` folder of each."""
    cwd = (start or Path.cwd()).resolve()
    root = project_root(cwd)
    return list(dict.fromkeys((cwd, root, cwd / "src", root / "src")))


def _in_project(class_name: str) -> list[str]:
    """``module.Class`` for each LightningContainer named ``class_name`` in the project's own
    packages: found by reading their sources, then only the candidate modules imported (one
    that fails to import is still a candidate: using its full name reports why)."""
    candidates = []
    for qualified in find_class_definitions(class_name, project_roots()):
        module_name = qualified.rpartition(".")[0]
        try:
            found = vars(importlib.import_module(module_name)).get(class_name)
        except IMPORT_FAILURES:
            candidates.append(qualified)
            continue
        if inspect.isclass(found) and issubclass(found, LightningContainer):
            candidates.append(qualified)
    return candidates


def find_container(name: str) -> type[LightningContainer]:
    """The container class ``name`` refers to; raises LookupFailed when there is not one."""
    if not _NAME.match(name or ""):
        raise LookupFailed(f"invalid container name {name!r}: expected Name or package.Name")
    ensure_importable()
    *prefix, class_name = name.split(".")
    namespace = ".".join(prefix) if prefix else DEFAULT_NAMESPACE
    root = _import(namespace)
    return _verdict(_search(root, class_name), namespace, name)
