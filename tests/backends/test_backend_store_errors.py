"""An unreachable or corrupt run store gives a clear StoreError and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from himl_manifest.backends.local import LocalBackend
from himl_manifest.backends.local_uri import absolute_uri, sqlite_path
from himl_manifest.backends.registry import open_backend
from himl_manifest.errors import ConfigError, StoreError


def test_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_text("not a database")
    with pytest.raises(StoreError, match="is not an SQLite database"):
        LocalBackend(f"sqlite:///{db}", tmp_path)
    assert db.read_text() == "not a database"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_damaged_sqlite_file(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\xff" * 100)
    with pytest.raises(StoreError, match="run store"):
        LocalBackend(f"sqlite:///{db}", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("sqlite:////nonexistent-himl-folder/mlflow.db", "does not exist"),
        ("foo://bar", "run store foo://bar"),
        ("not a uri", "is not a URI"),
    ],
)
def test_bad_uris(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(StoreError, match=message):
        LocalBackend(uri, tmp_path)
    assert not Path("/nonexistent-himl-folder").exists()
    assert list(tmp_path.iterdir()) == []


def test_relative_sqlite_uris_are_made_absolute(tmp_path: Path) -> None:
    assert absolute_uri("sqlite:///x.db", tmp_path) == f"sqlite:///{tmp_path / 'x.db'}"
    assert absolute_uri(f"sqlite:///{tmp_path}/x.db", Path("/")) == f"sqlite:///{tmp_path}/x.db"
    assert sqlite_path("sqlite:////a/b.db") == Path("/a/b.db")
    assert sqlite_path("http://host") is None


def test_registry(tmp_path: Path) -> None:
    from himl_manifest.backends.memory import MemoryBackend

    assert isinstance(open_backend("memory"), MemoryBackend)
    with pytest.raises(ConfigError, match="no Azure ML workspace found"):
        open_backend("azureml", root=tmp_path)
    with pytest.raises(ConfigError, match="unknown backend"):
        open_backend("cloud9")


def test_registry_opens_the_local_store(tmp_path: Path, empty_store: Path) -> None:
    backend = open_backend("local", tracking_uri=f"sqlite:///{empty_store}", root=tmp_path)
    assert isinstance(backend, LocalBackend)
    assert backend.name == "local"
