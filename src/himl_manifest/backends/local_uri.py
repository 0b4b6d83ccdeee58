"""What a local tracking URI points at (a SQLite file, initialized or not), and what MLflow's and
SQLite's failures mean: each leaves as a :class:`~himl_manifest.errors.StoreError` naming the URI,
and a busy database is retried."""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlparse

from himl_manifest.errors import StoreError

SQLITE_MAGIC = b"SQLite format 3\x00"
_READ_ONLY = ("attempt to write a readonly database", "readonly database")

T = TypeVar("T")


def quiet_mlflow_logs() -> None:
    """MLflow and alembic announce schema creation on stderr at INFO: keep stderr for us."""
    for name in ("mlflow.store.db.utils", "alembic", "alembic.runtime.migration", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    if not uri.startswith("sqlite:"):
        return None
    parsed = urlparse(uri)
    path = unquote(parsed.path)
    if not path or path == "/:memory:":
        return None
    # sqlite:///relative.db -> "/relative.db" in urlparse; sqlite:////abs.db -> "//abs.db"
    if uri.startswith("sqlite:////"):
        return Path("/" + path.lstrip("/"))
    return Path(path.lstrip("/"))


def check_uri(uri: str) -> None:
    """Refuse, before MLflow touches anything, a store that cannot be right."""
    if "://" not in uri and not uri.startswith("sqlite:"):
        raise StoreError(f"tracking URI {uri!r} is not a URI (expected e.g. sqlite:///mlflow.db)")
    db = sqlite_path(uri)
    if db is None:
        return
    if not db.parent.is_dir():
        raise StoreError(f"run store {uri}: folder {db.parent} does not exist")
    if db.exists():
        if not db.is_file():
            raise StoreError(f"run store {uri}: {db} is not a file")
        try:
            with db.open("rb") as handle:
                head = handle.read(len(SQLITE_MAGIC))
        except OSError as exc:
            raise StoreError(f"run store {uri}: cannot read {db}: {exc}") from exc
        if head and head != SQLITE_MAGIC:
            raise StoreError(f"run store {uri}: {db} is not an SQLite database (corrupt?)")


def read_only_row(db: Path, query: str, *params: object) -> tuple[Any, ...] | None:
    """The first row ``query`` gives on the SQLite file ``db``, opened read-only; None when
    there is no such file, no row, or SQLite cannot answer (not a database, no such table)."""
    if not db.is_file():
        return None
    try:
        connection = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = connection.execute(query, params).fetchone()
    except sqlite3.Error:
        return None
    finally:
        connection.close()
    return tuple(row) if row is not None else None


def is_initialized_sqlite(db: Path) -> bool:
    """Whether ``db`` is an SQLite file holding MLflow's ``runs`` table (read-only check)."""
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'"
    return read_only_row(db, query) is not None


def is_store_failure(exc: BaseException) -> bool:
    module = type(exc).__module__
    return module.startswith(("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3"))


def is_read_only(exc: BaseException) -> bool:
    return any(text in str(exc) for text in _READ_ONLY)


def is_busy(exc: BaseException) -> bool:
    return "database is locked" in str(exc) or "database is busy" in str(exc)


@contextlib.contextmanager
def store_errors(uri: str, doing: str) -> Iterator[None]:
    """Turn MLflow / SQLAlchemy failures into a StoreError naming the store."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        if not is_store_failure(exc) and not isinstance(exc, OSError):
            raise
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if is_read_only(exc):
            where = sqlite_path(uri)
            raise StoreError(f"the run store {where or uri} is read-only: {doing} failed") from None
        raise StoreError(f"run store {uri}: {doing} failed: {message}") from exc


def retrying(call: Callable[[], T], attempts: int = 8) -> T:
    """Run ``call``; retry while SQLite says another process holds the database."""
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:
            if attempt == attempts - 1 or not is_busy(exc):
                raise
            time.sleep(0.1 * (2**attempt))
    raise AssertionError("unreachable")


def absolute_uri(uri: str, root: Path) -> str:
    """A relative ``sqlite:///x.db`` made absolute (against ``root``): jobs run elsewhere."""
    db = sqlite_path(uri)
    if db is None or db.is_absolute():
        return uri
    return f"sqlite:///{(root / db).resolve()}"
