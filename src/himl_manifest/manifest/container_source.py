"""A container class's fields, read from its source: parsed with :mod:`ast`, never imported.

`himl validate` checks a manifest's ``params`` names against these fields without running a line
of user code. Given ``container: myproj.models.BlobsClassifier`` and the folders the job imports
from, :class:`SourceIndex` finds the module's file the way the runner's lookup
(:mod:`himl_manifest.runner.lookup`) would find the class, parses it, and collects the fields a
container has at run time (:func:`himl_manifest.runner.fields.container_fields`):

- annotated class attributes (``hidden_size: int = 64``, ``ClassVar`` excluded), and
- attributes a method sets on ``self`` (``self.learning_rate = 1e-3`` in ``__init__``),

of the class and of every base class, down to the shipped ``LightningContainer`` (read from its
own source the same way). Names that start with ``_`` are private, as at run time.

The reading is conservative: whatever it cannot follow makes the whole class *unknown*
(:meth:`SourceIndex.container` returns None) and the check says nothing, rather than report a
field that exists. Unknown are: a class or module not found under the search folders (an
installed package, a C extension), a class defined in several modules, a base class that is
not a plain name (``make_base()``, ``Base[T]``) or that comes from anywhere but the project or
himl-manifest itself (a third-party package), a metaclass or a decorator other than
``dataclass``/``final``, attributes set dynamically (``setattr(self, ...)``, ``self.__dict__``,
``vars(self)``), a class that does not derive from ``LightningContainer``, and a source file
that does not parse.

Parsed modules and resolved classes are cached in the index: one validate run that checks 1,000
manifests naming the same container parses its source once. Standard library only.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from himl_manifest.manifest.class_fields import (
    StaticField,
    Unknown,
    check_readable,
    declared_fields,
    dotted_name,
    top_level,
)

#: The package a bare container name (``HelloWorld``) is searched in (as hi-ml's
#: ``health_ml.configs``); :mod:`himl_manifest.runner.lookup` searches the same one.
DEFAULT_NAMESPACE = "himl_manifest.configs"
#: Where the shipped base class is defined; a container is a class that derives from it.
SHIPPED_BASE = "himl_manifest.runner.container.LightningContainer"
#: Names the shipped base is also imported by that the source can't show (a lazy
#: ``__getattr__`` in ``himl_manifest/__init__.py``).
_ALIASES = {"himl_manifest.LightningContainer": SHIPPED_BASE}
#: The folder that holds the ``himl_manifest`` package itself.
_SHIPPED_ROOT = Path(__file__).resolve().parents[2]
#: Bases that add no fields.
_NEUTRAL_BASES = frozenset({"object", "ABC", "abc.ABC"})
#: Source files larger than this are not read (generated code): the class is unknown.
MAX_SOURCE_BYTES = 2_000_000
#: Files a project-wide search for a class reads at most.
MAX_SCANNED_FILES = 5_000
#: Base classes followed at most (a loop of re-exports, or a very deep hierarchy, stops here).
_MAX_DEPTH = 32
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SKIPPED_DIRS = frozenset({"node_modules", "site-packages", "outputs", "build", "dist"})
#: ``src`` is searched as a root of its own, not as a package.
_SKIPPED_TOP = _SKIPPED_DIRS | {"src"}


@dataclass(frozen=True)
class StaticClass:
    """A container class read from source: every field, base classes' included."""

    name: str
    qualname: str  # module.Class
    path: Path
    fields: dict[str, StaticField]

    def own_fields(self) -> list[str]:
        """Field names not inherited from the shipped base, in declaration order."""
        base = SHIPPED_BASE
        return [n for n, f in self.fields.items() if f.owner != base]


@dataclass(frozen=True)
class _Module:
    name: str
    path: Path  # the .py file (``__init__.py`` of a package)
    package: bool


@dataclass
class SourceIndex:
    """Parsed modules and resolved classes, kept for one validate run (or longer)."""

    _trees: dict[Path, ast.Module | None] = field(default_factory=dict)
    _bindings: dict[tuple[Path, str], dict[str, tuple[str, ...]]] = field(default_factory=dict)
    _containers: dict[tuple[tuple[Path, ...], str], StaticClass | None] = field(
        default_factory=dict
    )
    parses: int = 0  # source files parsed so far (the cache's test counts them)

    # --- the public questions --------------------------------------------------------------------

    def container(self, name: str, roots: Sequence[Path]) -> StaticClass | None:
        """The container ``name`` names (``Name``, ``pkg.Name``, ``pkg.module.Name``), with
        ``roots`` the folders the job imports from; None when it can't be read statically."""
        key = (tuple(roots), name)
        if not all(_IDENTIFIER.match(part) for part in name.split(".")):
            return None  # the schema refuses it already; never a path
        if key not in self._containers:
            try:
                self._containers[key] = self._read_container(name, tuple(roots))
            except (Unknown, RecursionError):
                self._containers[key] = None
        return self._containers[key]

    # --- finding modules -------------------------------------------------------------------------

    def _tree(self, path: Path) -> ast.Module | None:
        if path not in self._trees:
            self._trees[path] = None
            try:
                if path.stat().st_size <= MAX_SOURCE_BYTES:
                    source = path.read_bytes()
                    self.parses += 1
                    self._trees[path] = ast.parse(source, filename=str(path))
            except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
                pass
        return self._trees[path]

    @staticmethod
    def _locate(dotted: str, roots: tuple[Path, ...]) -> _Module | Path | None:
        """Module ``dotted`` (its file), else a namespace package (its folder), else None: the
        first root that has a module or regular package wins, as on ``sys.path``."""
        parts = dotted.split(".")
        search = (_SHIPPED_ROOT,) if parts[0] == "himl_manifest" else roots
        namespace: Path | None = None
        for root in search:
            base = root.joinpath(*parts)
            try:
                if (base / "__init__.py").is_file():
                    return _Module(dotted, base / "__init__.py", True)
                if base.with_suffix(".py").is_file():
                    return _Module(dotted, base.with_suffix(".py"), False)
                if namespace is None and base.is_dir():
                    namespace = base
            except OSError:
                continue
        return namespace

    def _module(self, dotted: str, roots: tuple[Path, ...]) -> _Module:
        found = self._locate(dotted, roots)
        if not isinstance(found, _Module):
            raise Unknown(dotted)
        return found

    # --- the container and its bases -------------------------------------------------------------

    def _read_container(self, name: str, roots: tuple[Path, ...]) -> StaticClass | None:
        *prefix, class_name = name.split(".")
        namespace = ".".join(prefix) or DEFAULT_NAMESPACE
        pattern = _class_pattern(class_name)
        defining = [
            module
            for module in self._namespace_modules(namespace, roots)
            if _mentions(module.path, pattern) and self._defines(module, class_name)
        ]
        if len(defining) != 1:  # not found, or ambiguous: the lookup reports either
            return None
        module = defining[0]
        fields: dict[str, StaticField] = {}
        if not self._collect(module, class_name, roots, fields, {}, 0):
            return None  # not a LightningContainer: the lookup rejects it
        return StaticClass(class_name, f"{module.name}.{class_name}", module.path, fields)

    def _namespace_modules(self, namespace: str, roots: tuple[Path, ...]) -> Iterator[_Module]:
        """The modules the lookup searches for a class under ``namespace`` (recursively)."""
        found = self._locate(namespace, roots)
        if found is None:
            return
        if isinstance(found, _Module):
            yield found
            if not found.package:
                return
            folder = found.path.parent
        else:
            folder = found
        yield from _package_modules(folder, namespace)

    def _defines(self, module: _Module, class_name: str) -> bool:
        return self._binding(module, class_name)[0] == "class"

    def _binding(self, module: _Module, name: str) -> tuple[str, ...]:
        key = (module.path, module.name)
        if key not in self._bindings:
            tree = self._tree(module.path)
            if tree is None:
                raise Unknown(str(module.path))
            self._bindings[key] = _top_level_bindings(tree, module)
        return self._bindings[key].get(name, ("missing",))

    def _class_def(self, module: _Module, class_name: str) -> ast.ClassDef:
        tree = self._tree(module.path)
        for node in top_level(tree.body if tree else []):
            if isinstance(node, ast.ClassDef) and node.name == class_name:
                return node
        raise Unknown(f"{module.name}.{class_name}")

    def _collect(
        self,
        module: _Module,
        class_name: str,
        roots: tuple[Path, ...],
        fields: dict[str, StaticField],
        seen: dict[str, bool | None],
        depth: int,
    ) -> bool:
        """Add the fields of ``module.class_name`` and its bases to ``fields``; True when the
        class derives from the shipped base. Raises Unknown where the source can't tell.
        ``seen``: each class visited, with its answer (None while its bases are read, so a
        class that is its own base is unknown; a diamond's shared base is read once)."""
        qualname = f"{module.name}.{class_name}"
        if depth > _MAX_DEPTH or (qualname in seen and seen[qualname] is None):
            raise Unknown(qualname)
        if qualname in seen:
            return bool(seen[qualname])
        seen[qualname] = None
        node = self._class_def(module, class_name)
        shipped = qualname == SHIPPED_BASE
        if not shipped:
            check_readable(node)
        is_container = shipped
        for base in node.bases:
            if dotted_name(base) in _NEUTRAL_BASES:
                continue
            target, target_class = self._resolve(module, base, roots, depth)
            is_container |= self._collect(target, target_class, roots, fields, seen, depth + 1)
        for found in declared_fields(node, qualname):
            fields.setdefault(found.name, found)
        seen[qualname] = is_container
        return is_container

    def _resolve(
        self, module: _Module, expr: ast.expr, roots: tuple[Path, ...], depth: int
    ) -> tuple[_Module, str]:
        """The (module, class name) a base-class expression of ``module`` refers to."""
        dotted = dotted_name(expr)
        if dotted is None:
            raise Unknown(ast.unparse(expr))
        head, *rest = dotted.split(".")
        binding = self._binding(module, head)
        if binding[0] == "class" and not rest:
            return module, head
        if binding[0] == "module":
            target = binding[1]
        elif binding[0] == "from":
            target = f"{binding[1]}.{binding[2]}"
        else:
            raise Unknown(dotted)
        return self._resolve_dotted(".".join([target, *rest]), roots, depth)

    def _resolve_dotted(
        self, dotted: str, roots: tuple[Path, ...], depth: int
    ) -> tuple[_Module, str]:
        """``pkg.module.Class`` (maybe re-exported) as the module that defines the class."""
        for _ in range(_MAX_DEPTH - depth):
            dotted = _ALIASES.get(dotted, dotted)
            owner, _, name = dotted.rpartition(".")
            if not owner or self._locate(owner.split(".")[0], roots) is None:
                raise Unknown(dotted)  # a third-party package: not followed
            module = self._module(owner, roots)
            binding = self._binding(module, name)
            if binding[0] == "class":
                return module, name
            if binding[0] == "from":
                dotted = f"{binding[1]}.{binding[2]}"
                continue
            raise Unknown(dotted)
        raise Unknown(dotted)


def _package_modules(folder: Path, prefix: str) -> Iterator[_Module]:
    """Every module below ``folder`` that :mod:`pkgutil` would list: ``.py`` files with
    importable names, and sub-packages (folders with ``__init__.py``), recursively."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        stem = entry.stem if entry.suffix == ".py" else entry.name
        if not _IDENTIFIER.match(stem):
            continue
        try:
            if entry.suffix == ".py" and entry.is_file() and stem != "__init__":
                yield _Module(f"{prefix}.{stem}", entry, False)
            elif not entry.is_symlink() and entry.is_dir() and (entry / "__init__.py").is_file():
                yield _Module(f"{prefix}.{stem}", entry / "__init__.py", True)
                yield from _package_modules(entry, f"{prefix}.{stem}")
        except OSError:
            continue


def _absolute(module: _Module, level: int, target: str | None) -> str:
    """The absolute name of ``from <level dots><target> import ...`` in ``module``."""
    if level == 0:
        return target or ""
    parts = module.name.split(".")
    package = parts if module.package else parts[:-1]
    if level > len(package):
        raise Unknown(f"relative import beyond the top-level package in {module.name}")
    base = package[: len(package) - level + 1]
    return ".".join([*base, target] if target else base)


def _top_level_bindings(tree: ast.Module, module: _Module) -> dict[str, tuple[str, ...]]:
    """What each module-level name is bound to: ``("class",)``, ``("module", "a.b")``,
    ``("from", "a.b", "Name")``, or ``("other",)`` (an assignment, a function, two bindings)."""
    bindings: dict[str, tuple[str, ...]] = {}

    def bind(name: str, what: tuple[str, ...]) -> None:
        bindings[name] = what if bindings.get(name, what) == what else ("other",)

    for node in top_level(tree.body):
        if isinstance(node, ast.ClassDef):
            bind(node.name, ("class",))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    bind(alias.asname, ("module", alias.name))
                else:
                    top = alias.name.split(".")[0]
                    bind(top, ("module", top))
        elif isinstance(node, ast.ImportFrom):
            try:
                source = _absolute(module, node.level, node.module)
            except Unknown:
                continue
            for alias in node.names:
                if alias.name != "*":
                    bind(alias.asname or alias.name, ("from", source, alias.name))
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            bind(node.name, ("other",))
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        bind(name.id, ("other",))
    return bindings


def _class_pattern(class_name: str) -> re.Pattern[str]:
    return re.compile(rf"^[ \t]*class[ \t]+{re.escape(class_name)}\b", re.MULTILINE)


def _mentions(path: Path, pattern: re.Pattern[str]) -> bool:
    """Whether the source at ``path`` may define the class (a cheap text search before the
    parse); False for a file that can't be read or is too large."""
    try:
        if path.stat().st_size > MAX_SOURCE_BYTES:
            return False
        return pattern.search(path.read_text(encoding="utf-8", errors="replace")) is not None
    except OSError:
        return False


# --- a class anywhere in the project (for `himl-runner --model=Name`) ---------------------------


def find_class_definitions(class_name: str, roots: Sequence[Path]) -> list[str]:
    """``module.Class`` for every module-level ``class <class_name>`` in the top-level packages
    and modules of ``roots`` (the project root, its ``src/``, ...), read as text and parsed,
    never imported; sorted. Hidden folders, symbolic links to folders, virtual environments and
    ``outputs/`` are skipped, and at most :data:`MAX_SCANNED_FILES` files and folders are
    visited."""
    pattern = _class_pattern(class_name)
    found: set[str] = set()
    budget = [MAX_SCANNED_FILES]
    index = SourceIndex()
    for root in dict.fromkeys(roots):
        for module in _project_modules(root, budget):
            if _mentions(module.path, pattern):
                try:
                    if index._defines(module, class_name):
                        found.add(f"{module.name}.{class_name}")
                except Unknown:
                    continue
    return sorted(found)


def _project_modules(root: Path, budget: list[int]) -> Iterator[_Module]:
    """Top-level modules and packages of ``root`` (namespace packages included), recursively."""
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return
    for entry in entries:
        if budget[0] <= 0:
            return
        name = entry.stem if entry.suffix == ".py" else entry.name
        if not _IDENTIFIER.match(name) or name in _SKIPPED_TOP or name.startswith("_"):
            continue
        try:
            if entry.suffix == ".py" and entry.is_file():
                budget[0] -= 1
                yield _Module(name, entry, False)
            elif not entry.is_symlink() and entry.is_dir() and not (entry / "pyvenv.cfg").exists():
                yield from _walk_package(entry, name, budget)
        except OSError:
            continue


def _walk_package(folder: Path, prefix: str, budget: list[int]) -> Iterator[_Module]:
    budget[0] -= 1  # folders count too: a tree of empty folders ends the search as well
    init = folder / "__init__.py"
    if init.is_file():
        budget[0] -= 1
        yield _Module(prefix, init, True)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return
    for entry in entries:
        if budget[0] <= 0:
            return
        stem = entry.stem if entry.suffix == ".py" else entry.name
        if not _IDENTIFIER.match(stem) or stem == "__init__" or entry.name == "__pycache__":
            continue
        try:
            if entry.suffix == ".py" and entry.is_file():
                budget[0] -= 1
                yield _Module(f"{prefix}.{stem}", entry, False)
            elif not entry.is_symlink() and entry.is_dir() and stem not in _SKIPPED_DIRS:
                yield from _walk_package(entry, f"{prefix}.{stem}", budget)
        except OSError:
            continue
