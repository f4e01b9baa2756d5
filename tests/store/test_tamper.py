"""Changing, swapping, moving or dropping ciphertext on disk is caught and named; the rest reads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hush.daemon.store import DATABASE_NAME, IntegrityError, Store
from tests.conftest import Daemon
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


@pytest.mark.parametrize("value", [7, 2.5, "plain text"], ids=["integer", "real", "text"])
@pytest.mark.parametrize("column", ["title", "system", "summary", "head", "wrapped_key"])
def test_a_field_of_another_type_fails_alone_by_name(store: Store, database: Path,
                                                     key_file: Path, column: str,
                                                     value: object) -> None:
    bad, good = seeded(store), seeded(store)
    with offline(store, database, key_file) as db:
        db.execute(f"UPDATE conversations SET {column} = ? WHERE id = ?", (value, bad))
    reopened = opener(database, key_file)
    kind = "key" if column == "wrapped_key" else column
    listed = {s.id: s.error for s in reopened.list(ALICE)}
    assert listed[good] is None
    if kind in ("title", "key"):
        assert listed[bad] is not None and listed[bad].startswith(f"conversation {bad}, {kind}:")
    hits = {h.conversation_id for h in reopened.search(ALICE, "message 3")}
    assert good in hits
    if kind == "key":
        with pytest.raises(IntegrityError, match=f"conversation {bad}, key: "):
            reopened.get(ALICE, bad)
    else:
        assert [(f.kind, f.position) for f in reopened.get(ALICE, bad).failures] == [(kind, 0)]
    assert reopened.get(ALICE, good).failures == ()


def test_a_message_or_clear_column_of_another_type_fails_alone(store: Store, database: Path,
                                                               key_file: Path) -> None:
    bad, good = seeded(store), seeded(store)
    with offline(store, database, key_file) as db:
        db.execute("UPDATE messages SET body = 42 WHERE conversation_id = ? AND position = 1",
                   (bad,))
        db.execute("UPDATE messages SET position = 'two' WHERE conversation_id = ? AND "
                   "position = 2", (bad,))
        db.execute("UPDATE conversations SET message_count = 'many', updated = 'yesterday' "
                   "WHERE id = ?", (bad,))
    reopened = opener(database, key_file)
    listed = {s.id: s for s in reopened.list(ALICE)}
    assert isinstance(listed[bad].message_count, int) and isinstance(listed[bad].updated, float)
    assert listed[good].error is None
    failures = [(f.kind, f.position) for f in reopened.get(ALICE, bad).failures]
    assert ("head", 0) in failures and ("message", 1) in failures
    assert {h.conversation_id for h in reopened.search(ALICE, "message 4")} == {bad, good}


def test_hush_history_lists_searches_and_shows_around_a_damaged_row(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    for text in ("first question", "second question"):
        assert tiny_daemon.hush("ask", "--max-tokens", "3", text).returncode == 0
    tiny_daemon.stop()
    with sqlite3.connect(tiny_daemon.state_dir / DATABASE_NAME) as db:
        (bad,) = db.execute("SELECT id FROM conversations ORDER BY created LIMIT 1").fetchone()
        db.execute("UPDATE conversations SET title = 12345 WHERE id = ?", (bad,))
    db.close()
    tiny_daemon.start()
    listing = tiny_daemon.hush("history", "list")
    assert listing.returncode == 0, listing.stderr
    assert "second question" in listing.stdout
    assert f"(unreadable: conversation {bad}, title: failed authentication)" in listing.stdout
    search = tiny_daemon.hush("history", "search", "question")
    assert search.returncode == 0 and "second question" in search.stdout, search.stderr
    assert "first question" in search.stdout  # its messages are intact
    show = tiny_daemon.hush("history", "show", bad)
    assert show.returncode == 1 and "first question" in show.stdout
    assert f"conversation {bad}, title: failed authentication" in show.stderr
    assert "internal" not in listing.stderr + search.stderr + show.stderr
    assert "Traceback" not in tiny_daemon.log
