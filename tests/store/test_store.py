"""Round trips, ownership, listing, search, export and retention on a real encrypted store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from hush.daemon.store import NotFound, Store, load_kek

ALICE, BOB = 1000, 1001


def test_round_trip_survives_reopen(store: Store, database: Path, key_file: Path) -> None:
    from tests.store.conftest import opener

    cid = store.create_conversation(ALICE, title="Trip plans", system="Be brief.")
    assert store.append(ALICE, cid, "user", "Where should we go in May?") == 0
    assert store.append(ALICE, cid, "assistant", "Lisbon: mild, 22 °C, 🐟.") == 1
    store.set_summary(ALICE, cid, "May trip ideas")
    store.close()

    reopened = opener(database, key_file)
    conversation = reopened.get(ALICE, cid)
    assert conversation.failures == ()
    assert (conversation.title, conversation.system, conversation.summary) == (
        "Trip plans", "Be brief.", "May trip ideas")
    assert [(m.position, m.role, m.content) for m in conversation.messages] == [
        (0, "user", "Where should we go in May?"), (1, "assistant", "Lisbon: mild, 22 °C, 🐟.")]
    assert conversation.messages[1].created >= conversation.messages[0].created
    reopened.close()


def test_nothing_readable_is_stored_in_the_clear(store: Store, database: Path) -> None:
    cid = store.create_conversation(ALICE, title="secret title", system="secret system")
    store.append(ALICE, cid, "user", "secret message")
    with sqlite3.connect(database) as db:
        row = db.execute("SELECT title, system, summary, head, wrapped_key FROM conversations"
                         ).fetchone()
        (body,) = db.execute("SELECT body FROM messages").fetchone()
    for blob in (*row, body):
        assert isinstance(blob, bytes)
        assert b"secret" not in blob
    # Padding: a short record is as long as any other short record.
    assert len(body) == len(row[0]) == len(row[1])


def test_one_uid_never_sees_another_uids_conversations(store: Store) -> None:
    mine = store.create_conversation(ALICE, title="alice's")
    store.append(ALICE, mine, "user", "alice only")
    theirs = store.create_conversation(BOB, title="bob's")

    assert [s.id for s in store.list(ALICE)] == [mine]
    assert [s.id for s in store.list(BOB)] == [theirs]
    assert store.count(BOB) == 1
    assert store.search(BOB, "alice") == []
    for attempt in (
        lambda: store.get(BOB, mine),
        lambda: store.append(BOB, mine, "user", "intrusion"),
        lambda: store.rename(BOB, mine, "renamed"),
        lambda: store.set_summary(BOB, mine, "x"),
        lambda: store.delete(BOB, mine),
        lambda: store.export(BOB, mine),
    ):
        with pytest.raises(NotFound, match="no conversation"):
            attempt()
    assert store.get(ALICE, mine).title == "alice's"
    assert len(store.get(ALICE, mine).messages) == 1


def test_list_orders_by_activity_and_pages(store: Store) -> None:
    ids = [store.create_conversation(ALICE, title=f"c{n}") for n in range(5)]
    store.append(ALICE, ids[0], "user", "bump")
    listed = store.list(ALICE)
    assert listed[0].id == ids[0] and listed[0].message_count == 1
    assert {s.title for s in listed} == {f"c{n}" for n in range(5)}
    assert [s.id for s in store.list(ALICE, limit=2, offset=1)] == [s.id for s in listed[1:3]]


def test_rename_and_untitled(store: Store) -> None:
    cid = store.create_conversation(ALICE)
    assert store.list(ALICE)[0].title is None
    store.rename(ALICE, cid, "Named")
    assert store.list(ALICE)[0].title == "Named"


def test_search_decrypts_in_memory(store: Store) -> None:
    a = store.create_conversation(ALICE, title="Recipes")
    store.append(ALICE, a, "user", "How long do I boil an egg?")
    store.append(ALICE, a, "assistant", "About nine minutes for a hard-boiled EGG.")
    b = store.create_conversation(ALICE, title="Egg-free baking")
    hits = store.search(ALICE, "egg")
    assert {(h.conversation_id, h.position) for h in hits} == {(a, 0), (a, 1), (b, None)}
    assert any("hard-boiled EGG" in h.snippet for h in hits)
    assert store.search(ALICE, "egg", limit=1) == hits[:1]
    assert store.search(ALICE, "") == []


def test_export_markdown_and_json(store: Store) -> None:
    cid = store.create_conversation(ALICE, title="Export me", system="sys")
    store.append(ALICE, cid, "user", "hello")
    store.append(ALICE, cid, "assistant", "hi there")
    markdown = store.export(ALICE, cid, "markdown")
    assert markdown.startswith("# Export me") and "## User\n\nhello" in markdown
    data = json.loads(store.export(ALICE, cid, "json"))
    assert [m["content"] for m in data["messages"]] == ["hello", "hi there"]
    with pytest.raises(ValueError, match="markdown, json"):
        store.export(ALICE, cid, "pdf")  # type: ignore[arg-type]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_retention_by_age_and_count(database: Path, key_file: Path) -> None:
    clock = FakeClock()
    kek = load_kek(None, credentials_dir=None, key_file=key_file)
    store = Store.open(database, kek, clock=clock)
    old = store.create_conversation(ALICE, title="old")
    clock.now += 7200
    newer = []
    for n in range(3):
        clock.now += 10
        newer.append(store.create_conversation(ALICE, title=f"n{n}"))
    bobs = store.create_conversation(BOB, title="bob")

    # Age: only what was idle longer than the limit goes, whoever owns it.
    assert store.apply_retention(max_age_s=3600) == 1
    with pytest.raises(NotFound):
        store.get(ALICE, old)
    # Count: each uid keeps its newest N; activity (an append) counts as new.
    clock.now += 10
    store.append(ALICE, newer[0], "user", "keep me")
    assert store.apply_retention(max_conversations=2) == 1
    assert [s.id for s in store.list(ALICE)] == [newer[0], newer[2]]
    assert [s.id for s in store.list(BOB)] == [bobs]
    assert store.apply_retention() == 0
    store.close()


def test_append_rejects_unknown_role(store: Store) -> None:
    cid = store.create_conversation(ALICE)
    with pytest.raises(ValueError, match="role must be one of"):
        store.append(ALICE, cid, "robot", "x")  # type: ignore[arg-type]
