"""The encrypted conversation store: SQLite holding ciphertext, opened with a key-encryption key.

Design (docs/security.md says the same for users and auditors):

- SQLite in WAL mode with `synchronous=FULL`, so a commit has reached the disk (WAL fsynced)
  before any method returns; the daemon acknowledges a message to the client only after that.
  NORMAL would survive a killed process but could lose the last commits on power loss, and an
  acknowledged message must survive both. Schema changes are ordered functions (migrations.py).
- Envelope encryption: each conversation has its own random 256-bit data key, stored only
  wrapped (AES-256-GCM) by the key-encryption key (KEK, keys.py). Titles, system prompts,
  summaries and messages are sealed with the data key, AES-256-GCM, a random 96-bit nonce each.
  AES-GCM over ChaCha20-Poly1305: AES-NI and the ARMv8 crypto extensions make it fast where Hush
  runs, it is the FIPS-approved choice, and chat records are far too short for speed to matter
  on boards without those extensions. Random nonces are safe: a data key seals one conversation,
  many orders of magnitude below the 2^32 messages where collisions start to matter.
- Associated data binds each record to its owner uid, conversation id, kind and position
  (crypto.RecordRef), so a record changed, swapped, or moved to another conversation or owner
  fails authentication, and is reported by name while the other records stay readable. A sealed
  "head" record holds the message count and timestamps, so dropping the last messages or
  editing the clear timestamps is detected too.
- The KEK proves itself against a sealed check value before anything is written, so a wrong key
  is an error at open and never re-keys existing data. `rotate` rewraps every data key in one
  transaction; afterwards the old KEK opens nothing.
- Delete is crypto-shredding: one commit drops the wrapped data key (from then on nothing of the
  conversation can be decrypted, even from a copy of the files taken later), a second deletes
  the rows; `secure_delete` zeroes freed bytes and a TRUNCATE checkpoint empties the WAL. A crash
  between the two commits is finished at the next open.
- Search decrypts a user's conversations in memory; there is no plaintext index on disk.
- Every query filters by the owner uid; another uid's conversation is simply not found.

One Store is used from one thread at a time (the daemon's store worker); a lock makes misuse safe.
"""

from __future__ import annotations

import builtins
import json
import logging
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import crypto, database, export
from .crypto import RecordRef, Unauthentic
from .errors import IntegrityError, IntegrityFailure, NotFound
from .keys import Kek, KeySource
from .records import (
    ROLES,
    Conversation,
    ConversationSummary,
    Message,
    Role,
    SearchHit,
)

log = logging.getLogger("hushd.store.store")

DATABASE_NAME = "conversations.db"
_SNIPPET = 40
# The clear columns as the types the code expects, whatever an edit outside Hush stored there
# (a TEXT count would otherwise fail every listing); `get` checks them against the sealed head.
_COUNT, _CREATED, _UPDATED = ("CAST(message_count AS INTEGER)", "CAST(created AS REAL)",
                              "CAST(updated AS REAL)")


def _snippet(content: str, at: int, length: int) -> str:
    start, end = max(0, at - _SNIPPET), at + length + _SNIPPET
    return ("…" if start else "") + content[start:end] + ("…" if end < len(content) else "")


def _text(value: str | None) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


class Store:
    """Conversations of every local user, encrypted; see the module docstring for the design."""

    def __init__(self, db: sqlite3.Connection, path: Path, kek: Kek, store_id: str,
                 clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock
        self._kek = kek
        self._store_id = store_id
        self._lock = threading.Lock()
        self.path = path

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, kek: Kek, *, clock: Callable[[], float] = time.time) -> Store:
        """Open (or create, mode 0600) the database; a KEK that does not open it is a StoreError.

        `clock` gives the timestamps retention compares (tests pass a fake one)."""
        db = database.connect(path)
        store = cls(db, path, kek, "", clock)
        try:
            with store._transaction():
                store._store_id = database.prepare(db, kek, path)
            store._purge_shredded()
        except BaseException:
            db.close()
            raise
        return store

    @property
    def key_source(self) -> KeySource:
        return self._kek.source

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock, self._transaction():
            yield

    def _owned(self, uid: int, cid: str, columns: str) -> tuple[Any, ...]:
        row = self._db.execute(
            f"SELECT {columns} FROM conversations "
            "WHERE id = ? AND uid = ? AND wrapped_key IS NOT NULL", (cid, uid),
        ).fetchone()
        if row is None:
            raise NotFound(f"no conversation {cid}; `hush history` lists yours")
        return tuple(row)

    def _data_key(self, uid: int, cid: str, wrapped: bytes) -> bytes:
        try:
            return self._kek.unwrap(wrapped, RecordRef(uid, cid, "key"))
        except Unauthentic:
            raise IntegrityError(IntegrityFailure(
                cid, "key", 0, "its wrapped data key failed authentication")) from None

    def _head(self, key: bytes, uid: int, cid: str, count: int, created: float,
              updated: float) -> bytes:
        head = {"n": count, "c": created, "u": updated}
        return crypto.seal(key, RecordRef(uid, cid, "head"), json.dumps(head).encode())

    def _check_head(self, key: bytes, uid: int, cid: str,
                    row: tuple[Any, ...]) -> tuple[int, IntegrityFailure | None]:
        """The message count to expect and, if the head disagrees with the rows, why."""
        count, created, updated, blob = row
        try:
            head = json.loads(crypto.unseal(key, RecordRef(uid, cid, "head"), blob))
        except Unauthentic:
            return count, IntegrityFailure(cid, "head", 0, "failed authentication")
        if (head["n"], head["c"], head["u"]) != (count, created, updated):
            return int(head["n"]), IntegrityFailure(
                cid, "head", 0, "the message count or timestamps were changed")
        return int(head["n"]), None

    # -- writing -------------------------------------------------------------------------------

    def create_conversation(self, uid: int, *, title: str | None = None,
                            system: str | None = None) -> str:
        """A new empty conversation owned by `uid`; returns its random id."""
        cid = secrets.token_hex(16)
        key = crypto.new_key()
        now = self._clock()

        def seal(kind: crypto.RecordKind, value: str | None) -> bytes:
            return crypto.seal(key, RecordRef(uid, cid, kind), _text(value))

        with self._writing():
            self._db.execute(
                "INSERT INTO conversations VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?, ?)",
                (cid, uid, now, now, self._kek.wrap(key, RecordRef(uid, cid, "key")),
                 seal("title", title), seal("system", system), seal("summary", None),
                 self._head(key, uid, cid, 0, now, now)),
            )
        return cid

    def append(self, uid: int, cid: str, role: Role, content: str) -> int:
        """Seal and commit one message; returns its position once it is durable on disk."""
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        now = self._clock()
        with self._writing():
            wrapped, count, created, updated, head = self._owned(
                uid, cid, "wrapped_key, message_count, created, updated, head")
            key = self._data_key(uid, cid, wrapped)
            # Appending on top of a truncated conversation would seal the truncation in.
            _, failure = self._check_head(key, uid, cid, (count, created, updated, head))
            if failure is not None:
                raise IntegrityError(failure)
            body = json.dumps({"r": role, "c": content, "t": now}, ensure_ascii=False).encode()
            self._db.execute(
                "INSERT INTO messages VALUES (?, ?, ?)",
                (cid, count, crypto.seal(key, RecordRef(uid, cid, "message", count), body)),
            )
            self._db.execute(
                "UPDATE conversations SET message_count = ?, updated = ?, head = ? WHERE id = ?",
                (count + 1, now, self._head(key, uid, cid, count + 1, created, now), cid),
            )
        return int(count)

    def _set_text(self, uid: int, cid: str, kind: crypto.RecordKind, value: str | None) -> None:
        with self._writing():
            (wrapped,) = self._owned(uid, cid, "wrapped_key")
            blob = crypto.seal(self._data_key(uid, cid, wrapped), RecordRef(uid, cid, kind),
                               _text(value))
            # `kind` is one of three fixed column names, never user input.
            self._db.execute(f"UPDATE conversations SET {kind} = ? WHERE id = ?", (blob, cid))

    def rename(self, uid: int, cid: str, title: str | None) -> None:
        self._set_text(uid, cid, "title", title)

    def set_summary(self, uid: int, cid: str, summary: str | None) -> None:
        self._set_text(uid, cid, "summary", summary)

    def delete(self, uid: int, cid: str) -> None:
        """Crypto-shred: the wrapped data key goes in its own commit, then the rows."""
        with self._writing():
            cursor = self._db.execute(
                "UPDATE conversations SET wrapped_key = NULL "
                "WHERE id = ? AND uid = ? AND wrapped_key IS NOT NULL", (cid, uid))
            if cursor.rowcount == 0:
                raise NotFound(f"no conversation {cid}; `hush history` lists yours")
        self._purge_shredded()

    def _purge_shredded(self) -> None:
        with self._writing():
            self._db.execute("DELETE FROM messages WHERE conversation_id IN "
                             "(SELECT id FROM conversations WHERE wrapped_key IS NULL)")
            self._db.execute("DELETE FROM conversations WHERE wrapped_key IS NULL")
        self._checkpoint()

    def _checkpoint(self) -> None:
        # secure_delete zeroed the freed bytes in the database; old page images in the WAL go
        # only when it is checkpointed and truncated.
        with self._lock:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            log.warning("WAL checkpoint was blocked by a reader; deleted ciphertext stays in the "
                        "WAL until the next checkpoint (stop other readers of %s)", self.path)

    def apply_retention(self, *, max_age_s: float | None = None,
                        max_conversations: int | None = None, now: float | None = None) -> int:
        """Shred conversations idle longer than `max_age_s`, and each uid's beyond its newest
        `max_conversations`; returns how many went."""
        if (max_age_s is not None and max_age_s <= 0) or (
                max_conversations is not None and max_conversations < 0):
            raise ValueError("retention limits must be positive (None means no limit)")
        now = self._clock() if now is None else now
        victims: set[str] = set()
        with self._lock:
            if max_age_s is not None:
                victims.update(cid for (cid,) in self._db.execute(
                    "SELECT id FROM conversations WHERE wrapped_key IS NOT NULL AND updated < ?",
                    (now - max_age_s,)))
            if max_conversations is not None:
                victims.update(cid for (cid,) in self._db.execute(
                    "SELECT id FROM (SELECT id, row_number() OVER (PARTITION BY uid "
                    "ORDER BY updated DESC, id) AS rank FROM conversations "
                    "WHERE wrapped_key IS NOT NULL) WHERE rank > ?", (max_conversations,)))
        if victims:
            with self._writing():
                self._db.executemany("UPDATE conversations SET wrapped_key = NULL WHERE id = ?",
                                     [(cid,) for cid in victims])
            self._purge_shredded()
        return len(victims)

    def rotate(self, new_kek: Kek) -> None:
        """Rewrap every data key under `new_kek` in one transaction; the old KEK opens nothing."""
        with self._writing():
            rows = self._db.execute("SELECT id, uid, wrapped_key FROM conversations "
                                    "WHERE wrapped_key IS NOT NULL").fetchall()
            for cid, uid, wrapped in rows:
                key = self._data_key(uid, cid, wrapped)
                self._db.execute("UPDATE conversations SET wrapped_key = ? WHERE id = ?",
                                 (new_kek.wrap(key, RecordRef(uid, cid, "key")), cid))
            database.write_kek_meta(self._db, new_kek, self._store_id)
        self._kek = new_kek
        self._checkpoint()  # the old wrapped keys leave the WAL too

    # -- reading -------------------------------------------------------------------------------

    def _open_text(self, key: bytes, ref: RecordRef, blob: bytes,
                   failures: list[IntegrityFailure]) -> str | None:
        try:
            value = json.loads(crypto.unseal(key, ref, blob))
        except Unauthentic:
            failures.append(IntegrityFailure(ref.conversation_id, ref.kind, ref.position,
                                             "failed authentication"))
            return None
        return value if isinstance(value, str) else None

    def get(self, uid: int, cid: str) -> Conversation:
        """Decrypt one conversation. A record that fails authentication becomes a Message with
        `error` set and an entry in `failures`; the rest reads normally. Only a tampered data key
        makes the whole conversation unreadable (IntegrityError)."""
        with self._lock:
            row = self._owned(uid, cid, f"wrapped_key, title, system, summary, {_COUNT}, "
                                        f"{_CREATED}, {_UPDATED}, head")
            rows = self._db.execute(
                "SELECT CAST(position AS INTEGER), body FROM messages WHERE conversation_id = ? "
                "ORDER BY position", (cid,)).fetchall()
        wrapped, title_blob, system_blob, summary_blob, _, created, updated, _ = row
        key = self._data_key(uid, cid, wrapped)
        failures: list[IntegrityFailure] = []
        title = self._open_text(key, RecordRef(uid, cid, "title"), title_blob, failures)
        system = self._open_text(key, RecordRef(uid, cid, "system"), system_blob, failures)
        summary = self._open_text(key, RecordRef(uid, cid, "summary"), summary_blob, failures)
        expected, head_failure = self._check_head(key, uid, cid, row[4:])
        if head_failure is not None:
            failures.append(head_failure)
        messages: list[Message] = []
        for position, blob in rows:
            try:
                body = json.loads(crypto.unseal(key, RecordRef(uid, cid, "message", position),
                                                blob))
            except Unauthentic:
                failure = IntegrityFailure(cid, "message", position, "failed authentication")
                failures.append(failure)
                messages.append(Message(position, None, "", 0.0, error=failure.message))
                continue
            if position >= expected:
                failures.append(IntegrityFailure(cid, "message", position,
                                                 "lies beyond the sealed length"))
            messages.append(Message(position, body["r"], body["c"], body["t"]))
        present = {message.position for message in messages}
        failures += [IntegrityFailure(cid, "message", position, "is missing")
                     for position in range(expected) if position not in present]
        return Conversation(cid, created, updated, title, system, summary, tuple(messages),
                            tuple(failures))

    def count(self, uid: int) -> int:
        with self._lock:
            (total,) = self._db.execute("SELECT count(*) FROM conversations "
                                        "WHERE uid = ? AND wrapped_key IS NOT NULL",
                                        (uid,)).fetchone()
        return int(total)

    def list(self, uid: int, *, limit: int = 100, offset: int = 0) -> list[ConversationSummary]:
        """`uid`'s conversations, most recently updated first, titles decrypted."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, {_CREATED}, {_UPDATED}, {_COUNT}, wrapped_key, title "
                "FROM conversations WHERE uid = ? AND wrapped_key IS NOT NULL "
                "ORDER BY updated DESC, id LIMIT ? OFFSET ?", (uid, limit, offset)).fetchall()
        summaries = []
        for cid, created, updated, count, wrapped, title_blob in rows:
            failures: list[IntegrityFailure] = []
            title = None
            try:
                key = self._data_key(uid, cid, wrapped)
                title = self._open_text(key, RecordRef(uid, cid, "title"), title_blob, failures)
            except IntegrityError as error:
                failures.append(error.failure)
            summaries.append(ConversationSummary(
                cid, created, updated, title, count,
                error=failures[0].message if failures else None))
        return summaries

    def search(self, uid: int, query: str, *, limit: int = 50) -> builtins.list[SearchHit]:
        """Case-insensitive substring search over titles and messages, decrypted in memory.
        Records that fail authentication are skipped here; `get` reports them."""
        needle = query.lower()
        if not needle:
            return []
        hits: list[SearchHit] = []
        current, key, title = "", b"", None
        ignored: builtins.list[IntegrityFailure] = []
        # Streamed under the lock, so a search that fills `limit` early stops reading early.
        with self._lock:
            rows = self._db.execute(
                "SELECT c.id, c.wrapped_key, c.title, CAST(m.position AS INTEGER), m.body "
                "FROM conversations c "
                "LEFT JOIN messages m ON m.conversation_id = c.id "
                "WHERE c.uid = ? AND c.wrapped_key IS NOT NULL "
                "ORDER BY c.updated DESC, c.id, m.position", (uid,))
            for cid, wrapped, title_blob, position, blob in rows:
                if len(hits) >= limit:
                    break
                if cid != current:
                    current = cid
                    try:
                        key = self._data_key(uid, cid, wrapped)
                    except IntegrityError:
                        key = b""
                        continue
                    title = self._open_text(key, RecordRef(uid, cid, "title"), title_blob,
                                            ignored)
                    if title is not None and needle in title.lower():
                        hits.append(SearchHit(cid, title, None, title))
                if not key or position is None:
                    continue
                try:
                    content = json.loads(crypto.unseal(
                        key, RecordRef(uid, cid, "message", position), blob))["c"]
                except Unauthentic:
                    continue
                at = content.lower().find(needle)
                if at >= 0:
                    hits.append(SearchHit(cid, title, position, _snippet(content, at, len(needle))))
            rows.close()
        return hits[:limit]

    def export(self, uid: int, cid: str, fmt: export.ExportFormat = "markdown") -> str:
        return export.render(self.get(uid, cid), fmt)
