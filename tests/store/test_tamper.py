"""Changing, swapping, moving or dropping ciphertext on disk is caught and named; the rest reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hush.daemon.store import IntegrityError, Store
from tests.store.conftest import opener

ALICE, BOB = 1000, 1001


@contextmanager
def offline(store: Store, database: Path, key_file: Path) -> Iterator[sqlite3.Connection]:
    """Edit the closed database as an attacker with the files would."""
    store.close()
    db = sqlite3.connect(database)
    try:
        yield db
        db.commit()
    finally:
        db.close()


def seeded(store: Store, uid: int = ALICE, n: int = 5) -> str:
    cid = store.create_conversation(uid, title="Tamper target", system="sys")
    for position in range(n):
        store.append(uid, cid, "user" if position % 2 == 0 else "assistant", f"message {position}")
    return cid


def flip(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0x01]) + blob[index + 1 :]


@pytest.mark.parametrize("index", [0, 5, 20, -1])
def test_flipped_byte_in_a_message_is_named(store: Store, database: Path, key_file: Path,
                                            index: int) -> None:
    cid = seeded(store)
    with offline(store, database, key_file) as db:
        (blob,) = db.execute("SELECT body FROM messages WHERE position = 2").fetchone()
        db.execute("UPDATE messages SET body = ? WHERE position = 2", (flip(blob, index),))
    conversation = opener(database, key_file).get(ALICE, cid)
    assert [(f.kind, f.position) for f in conversation.failures] == [("message", 2)]
    expected = f"conversation {cid}, message 2: failed authentication"
    assert conversation.failures[0].message == expected
    assert conversation.messages[2].error is not None and conversation.messages[2].role is None
    readable = [m.content for m in conversation.messages if m.error is None]
    assert readable == ["message 0", "message 1", "message 3", "message 4"]
    assert conversation.title == "Tamper target"


@pytest.mark.parametrize("column", ["title", "system", "summary", "head"])
def test_flipped_byte_in_a_field_is_named(store: Store, database: Path, key_file: Path,
                                          column: str) -> None:
    cid = seeded(store)
    with offline(store, database, key_file) as db:
        (blob,) = db.execute(f"SELECT {column} FROM conversations").fetchone()
        db.execute(f"UPDATE conversations SET {column} = ?", (flip(blob, 30),))
    reopened = opener(database, key_file)
    conversation = reopened.get(ALICE, cid)
    assert [(f.kind, f.position) for f in conversation.failures] == [(column, 0)]
    assert len([m for m in conversation.messages if m.error is None]) == 5
    if column == "title":
        assert reopened.list(ALICE)[0].error == f"conversation {cid}, title: failed authentication"


def test_swapped_messages_both_fail(store: Store, database: Path, key_file: Path) -> None:
    cid = seeded(store)
    with offline(store, database, key_file) as db:
        (one,) = db.execute("SELECT body FROM messages WHERE position = 1").fetchone()
        (three,) = db.execute("SELECT body FROM messages WHERE position = 3").fetchone()
        db.execute("UPDATE messages SET body = ? WHERE position = 1", (three,))
        db.execute("UPDATE messages SET body = ? WHERE position = 3", (one,))
    conversation = opener(database, key_file).get(ALICE, cid)
    assert sorted(f.position for f in conversation.failures) == [1, 3]
    assert [m.content for m in conversation.messages if m.error is None] == [
        "message 0", "message 2", "message 4"]


def test_swapped_title_and_system_fail(store: Store, database: Path, key_file: Path) -> None:
    cid = seeded(store)
    with offline(store, database, key_file) as db:
        db.execute("UPDATE conversations SET title = system, system = title")
    conversation = opener(database, key_file).get(ALICE, cid)
    assert {f.kind for f in conversation.failures} == {"title", "system"}


def test_record_moved_to_another_conversation_fails(store: Store, database: Path,
                                                    key_file: Path) -> None:
    source, target = seeded(store), seeded(store)
    with offline(store, database, key_file) as db:
        (blob,) = db.execute("SELECT body FROM messages WHERE conversation_id = ? AND "
                             "position = 1", (source,)).fetchone()
        db.execute("UPDATE messages SET body = ? WHERE conversation_id = ? AND position = 1",
                   (blob, target))
        # And one record taken out of the source entirely, into the target's tail.
        db.execute("UPDATE messages SET conversation_id = ?, position = 5 WHERE "
                   "conversation_id = ? AND position = 4", (target, source))
    reopened = opener(database, key_file)
    moved_into = reopened.get(ALICE, target)
    assert [(f.position, f.reason) for f in moved_into.failures] == [
        (1, "failed authentication"), (5, "failed authentication")]
    assert [m.content for m in moved_into.messages if m.error is None] == [
        "message 0", "message 2", "message 3", "message 4"]
    taken_from = reopened.get(ALICE, source)
    assert [(f.position, f.reason) for f in taken_from.failures] == [(4, "is missing")]


def test_flipped_byte_in_a_wrapped_key_is_named(store: Store, database: Path,
                                               key_file: Path) -> None:
    cid, other = seeded(store), seeded(store)
    with offline(store, database, key_file) as db:
        (blob,) = db.execute("SELECT wrapped_key FROM conversations WHERE id = ?",
                             (cid,)).fetchone()
        db.execute("UPDATE conversations SET wrapped_key = ? WHERE id = ?", (flip(blob, 40), cid))
    reopened = opener(database, key_file)
    with pytest.raises(IntegrityError, match=f"conversation {cid}, key: "):
        reopened.get(ALICE, cid)
    assert reopened.get(ALICE, other).failures == ()


def test_conversation_moved_to_another_owner_fails(store: Store, database: Path,
                                                   key_file: Path) -> None:
    cid = seeded(store)
    with offline(store, database, key_file) as db:
        db.execute("UPDATE conversations SET uid = ?", (BOB,))
    reopened = opener(database, key_file)
    with pytest.raises(IntegrityError, match=f"conversation {cid}, key: .*failed authentication"):
        reopened.get(BOB, cid)
    assert reopened.list(BOB)[0].error is not None
    assert reopened.search(BOB, "message") == []


def test_wrapped_keys_swapped_between_conversations_fail(store: Store, database: Path,
                                                         key_file: Path) -> None:
    a, b, c = seeded(store), seeded(store), seeded(store)
    with offline(store, database, key_file) as db:
        (ka,) = db.execute("SELECT wrapped_key FROM conversations WHERE id = ?", (a,)).fetchone()
        (kb,) = db.execute("SELECT wrapped_key FROM conversations WHERE id = ?", (b,)).fetchone()
        db.execute("UPDATE conversations SET wrapped_key = ? WHERE id = ?", (kb, a))
        db.execute("UPDATE conversations SET wrapped_key = ? WHERE id = ?", (ka, b))
    reopened = opener(database, key_file)
    for cid in (a, b):
        with pytest.raises(IntegrityError, match=cid):
            reopened.get(ALICE, cid)
    assert reopened.get(ALICE, c).failures == ()
    assert {s.id: s.error is None for s in reopened.list(ALICE)} == {a: False, b: False, c: True}


def test_dropped_tail_and_edited_count_are_detected(store: Store, database: Path,
                                                    key_file: Path) -> None:
    cid = seeded(store)
    with offline(store, database, key_file) as db:
        db.execute("DELETE FROM messages WHERE position >= 3")
        db.execute("UPDATE conversations SET message_count = 3")
    reopened = opener(database, key_file)
    conversation = reopened.get(ALICE, cid)
    assert [(f.kind, f.position) for f in conversation.failures] == [
        ("head", 0), ("message", 3), ("message", 4)]
    # Appending would seal the truncation in; it is refused instead.
    with pytest.raises(IntegrityError, match="head"):
        reopened.append(ALICE, cid, "user", "more")


def test_edited_timestamp_is_detected(store: Store, database: Path, key_file: Path) -> None:
    cid = seeded(store)
    with offline(store, database, key_file) as db:
        db.execute("UPDATE conversations SET updated = updated + 86400")
    assert [f.kind for f in opener(database, key_file).get(ALICE, cid).failures] == ["head"]
