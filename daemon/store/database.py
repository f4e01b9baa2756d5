"""The SQLite file itself: connection settings, schema, and the KEK check value in `meta`."""

from __future__ import annotations

import os
import secrets
import sqlite3
from pathlib import Path

from . import migrations
from .crypto import RecordRef, Unauthentic
from .errors import StoreError
from .keys import Argon2Params, Kek, StoredKeyInfo

_CHECK = b"hush key check v1"


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating it 0600 in a 0700 directory) with the settings the design relies on.

    A directory the daemon cannot write (read-only, another owner, full) is a StoreError that
    names it, not a traceback."""
    try:
        return _connect(path)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if path.parent.is_dir() and not os.access(path.parent, os.W_OK):
            reason = "its directory is not writable"  # SQLite only says "unable to open"
        raise StoreError(
            f"cannot open the conversation store {path}: {reason}. Hush must be able to write "
            f"its state directory {path.parent}: make it writable for uid {os.getuid()}, or "
            "choose another (state_dir in hushd.yaml, or --state-dir)") from None


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not path.exists():
        # SQLite gives the -wal and -shm files the database's mode, so all of them stay 0600.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    # The daemon calls the store from one worker thread, not necessarily the opening one.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        (mode,) = db.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise StoreError(f"{path} cannot use write-ahead logging (got {mode!r}); put the "
                             "state directory on a local file system")
        # FULL: the WAL is fsynced at every commit, so an acknowledged message survives power
        # loss, not only a killed process (which NORMAL would already survive).
        db.execute("PRAGMA synchronous = FULL")
        # Freed bytes (deleted rows, replaced wrapped keys) are overwritten with zeros.
        db.execute("PRAGMA secure_delete = ON")
        db.execute("PRAGMA temp_store = MEMORY")
    except BaseException:
        db.close()
        raise
    return db


def key_info(path: Path) -> StoredKeyInfo | None:
    """What the database says about its KEK; None when it does not exist or was never used."""
    if not path.exists():
        return None
    db = sqlite3.connect(path)
    try:
        rows = dict(db.execute("SELECT name, value FROM meta").fetchall())
    except sqlite3.OperationalError:
        return None  # never initialised: no meta table yet
    finally:
        db.close()
    if "kek_check" not in rows:
        return None
    argon2 = Argon2Params.from_meta(rows["argon2"]) if "argon2" in rows else None
    return StoredKeyInfo(kind=rows["kek_kind"], argon2=argon2)


def prepare(db: sqlite3.Connection, kek: Kek, path: Path) -> str:
    """Migrate, then prove `kek` against the check value (or write one for a new store).

    Runs inside the caller's transaction: a wrong key rolls everything back, so nothing is ever
    migrated or re-keyed under the wrong key. Returns the store's random id.
    """
    migrations.migrate(db)
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
    if "kek_check" not in meta:
        store_id = secrets.token_hex(16)
        db.execute("INSERT INTO meta VALUES ('store_id', ?)", (store_id,))
        write_kek_meta(db, kek, store_id)
        return store_id
    store_id = str(meta["store_id"])
    try:
        ok = kek.unwrap(meta["kek_check"], RecordRef(0, store_id, "check")) == _CHECK
    except Unauthentic:
        ok = False
    if not ok:
        raise StoreError(
            f"the key from {kek.source} does not open the conversation store {path} (it was "
            f"encrypted with a {meta['kek_kind']}). Use the key it was made with; nothing was "
            "changed."
        )
    return store_id


def write_kek_meta(db: sqlite3.Connection, kek: Kek, store_id: str) -> None:
    check = kek.wrap(_CHECK, RecordRef(0, store_id, "check"))
    rows: list[tuple[str, bytes | str]] = [("kek_check", check), ("kek_kind", kek.source.kind)]
    if kek.argon2 is not None:
        rows.append(("argon2", kek.argon2.to_meta()))
    else:
        db.execute("DELETE FROM meta WHERE name = 'argon2'")
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows)
