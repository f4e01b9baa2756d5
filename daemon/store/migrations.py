"""Schema changes as ordered functions; `PRAGMA user_version` counts how many have run.

Each runs inside the transaction that opens the store, so a half-applied migration never sticks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .errors import StoreError

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def migration(function: Migration) -> Migration:
    MIGRATIONS.append(function)
    return function


@migration
def m001_initial(db: sqlite3.Connection) -> None:
    # Only ids, the owner uid, timestamps retention needs and counts are in the clear; every other
    # column is a sealed blob (see crypto.py). wrapped_key is NULL once a delete has shredded it.
    db.execute("CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)")
    db.execute(
        """CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            uid INTEGER NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            message_count INTEGER NOT NULL DEFAULT 0,
            wrapped_key BLOB,
            title BLOB NOT NULL,
            system BLOB NOT NULL,
            summary BLOB NOT NULL,
            head BLOB NOT NULL
        )"""
    )
    db.execute("CREATE INDEX conversations_by_owner ON conversations (uid, updated)")
    db.execute(
        """CREATE TABLE messages (
            conversation_id TEXT NOT NULL REFERENCES conversations (id),
            position INTEGER NOT NULL,
            body BLOB NOT NULL,
            UNIQUE (conversation_id, position)
        )"""
    )


def migrate(db: sqlite3.Connection) -> int:
    """Run the migrations this database has not seen; returns the version it was at before."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StoreError(f"the conversation store has schema version {version}, newer than this "
                         f"Hush knows ({len(MIGRATIONS)}); upgrade Hush to open it")
    for number, function in enumerate(MIGRATIONS[version:], start=version + 1):
        function(db)
        db.execute(f"PRAGMA user_version = {number}")
    return int(version)
