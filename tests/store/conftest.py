"""Real stores in tmp_path with real keys; helpers to read every byte a store left on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hush.daemon.store import DATABASE_NAME, Argon2Params, Store, open_store

# Argon2id at its cheapest, so passphrase tests take milliseconds; production uses the default.
FAST_ARGON2 = Argon2Params(iterations=1, memory_kib=64, lanes=1)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    path = tmp_path / "state"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "hush.key"


@pytest.fixture
def database(state_dir: Path) -> Path:
    return state_dir / DATABASE_NAME


_opened: list[Store] = []


def opener(database: Path, key_file: Path, **kwargs: object) -> Store:
    """open_store with no credential; tests may leave it open, `_close_stores` closes it."""
    store = open_store(database, credentials_dir=None, key_file=key_file, **kwargs)  # type: ignore[arg-type]
    _opened.append(store)
    return store


@pytest.fixture(autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


@pytest.fixture
def store(database: Path, key_file: Path) -> Iterator[Store]:
    opened = opener(database, key_file)
    yield opened
    opened.close()


def files_under(directory: Path) -> dict[Path, bytes]:
    """Every byte of every file under `directory` (database, WAL, shm, journal, anything)."""
    return {path: path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def holders(directory: Path, needle: bytes) -> list[Path]:
    return [path for path, data in files_under(directory).items() if needle in data]
