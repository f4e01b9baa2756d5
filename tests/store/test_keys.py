"""Key sources, wrong and missing keys, passphrases and rotation: real files, real crypto."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from hush.daemon.store import (
    Kek,
    KeySource,
    Store,
    StoreError,
    StoreLocked,
    open_store,
    rotate_keys,
)
from hush.daemon.store.crypto import RecordRef, Unauthentic
from hush.daemon.store.keys import pending_key_file, write_pending_key
from tests.store.conftest import FAST_ARGON2, files_under, holders, opener

ALICE = 1000


def fill(store: Store) -> str:
    cid = store.create_conversation(ALICE, title="kept")
    store.append(ALICE, cid, "user", "still here")
    return cid


def assert_readable(store: Store, cid: str) -> None:
    conversation = store.get(ALICE, cid)
    assert conversation.failures == ()
    assert conversation.title == "kept" and conversation.messages[0].content == "still here"


def test_first_run_creates_a_private_hex_key_file(database: Path, key_file: Path) -> None:
    store = opener(database, key_file)
    assert store.key_source == KeySource("key file", str(key_file))
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert len(bytes.fromhex(key_file.read_text())) == 32
    for path in files_under(database.parent):
        assert (path.stat().st_mode & 0o077) == 0, path
    cid = fill(store)
    store.close()
    assert_readable(opener(database, key_file), cid)


def test_wrong_key_is_refused_and_nothing_changes(database: Path, key_file: Path) -> None:
    store = opener(database, key_file)
    cid = fill(store)
    store.close()
    before = database.read_bytes()
    right = key_file.read_bytes()
    key_file.write_bytes(os.urandom(32).hex().encode())
    with pytest.raises(StoreError, match=r"does not open the conversation store .* nothing was"):
        opener(database, key_file)
    assert database.read_bytes() == before
    key_file.write_bytes(right)
    assert_readable(opener(database, key_file), cid)


def test_missing_key_is_an_error_and_no_new_key_is_made(database: Path, key_file: Path) -> None:
    store = opener(database, key_file)
    cid = fill(store)
    store.close()
    saved = key_file.read_bytes()
    key_file.unlink()
    before = database.read_bytes()
    with pytest.raises(StoreError, match=f"the key file {key_file} is missing.*Restore"):
        opener(database, key_file)
    assert not key_file.exists()
    assert database.read_bytes() == before
    key_file.write_bytes(saved)
    key_file.chmod(0o600)
    assert_readable(opener(database, key_file), cid)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_key_file_readable_by_others_is_refused(database: Path, key_file: Path,
                                                mode: int) -> None:
    opener(database, key_file).close()
    key_file.chmod(mode)
    with pytest.raises(StoreError, match=f"readable by group or others .*chmod 600 {key_file}"):
        opener(database, key_file)
    assert (key_file.stat().st_mode & 0o777) == mode  # Hush reports; it never fixes it silently


def test_garbage_key_file_is_refused(database: Path, key_file: Path) -> None:
    key_file.parent.mkdir()
    key_file.write_text("not a key\n")
    key_file.chmod(0o600)
    with pytest.raises(StoreError, match="32 raw bytes or 64 hex digits"):
        opener(database, key_file)
    assert not database.exists()


def test_credential_wins_and_is_required_once_used(tmp_path: Path, database: Path,
                                                   key_file: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "hush.key").write_bytes(os.urandom(32))  # raw bytes, as systemd-creds emits
    store = open_store(database, credentials_dir=credentials, key_file=key_file)
    assert store.key_source.kind == "credential"
    assert not key_file.exists()
    cid = fill(store)
    store.close()
    (credentials / "hush.key").rename(tmp_path / "saved.key")
    with pytest.raises(StoreError, match=r"systemd credential `hush\.key` is missing"):
        open_store(database, credentials_dir=credentials, key_file=key_file)
    assert not key_file.exists()
    (tmp_path / "saved.key").rename(credentials / "hush.key")
    assert_readable(open_store(database, credentials_dir=credentials, key_file=key_file), cid)


def test_passphrase_store_starts_locked(database: Path, key_file: Path) -> None:
    store = opener(database, key_file, passphrase="correct horse", argon2=FAST_ARGON2)
    assert store.key_source.kind == "passphrase"
    assert not key_file.exists()
    cid = fill(store)
    store.close()
    with pytest.raises(StoreLocked, match="hush unlock"):
        opener(database, key_file)
    assert not key_file.exists()
    with pytest.raises(StoreError, match="does not open"):
        opener(database, key_file, passphrase="wrong horse")
    # The salt and cost stored at creation are used, whatever the caller's defaults are.
    assert_readable(opener(database, key_file, passphrase="correct horse"), cid)
    with sqlite3.connect(database) as db:
        (params,) = db.execute("SELECT value FROM meta WHERE name = 'argon2'").fetchone()
    assert params.startswith("1:64:1:")


def test_rotation_rewraps_and_the_old_key_opens_nothing(database: Path, key_file: Path) -> None:
    store = opener(database, key_file)
    cids = [fill(store) for _ in range(3)]
    old = Kek(bytes.fromhex(key_file.read_text()), KeySource("key file"))
    with sqlite3.connect(database) as db:
        old_wrapped = [w for (w,) in db.execute("SELECT wrapped_key FROM conversations")]
    db.close()
    assert rotate_keys(store) == KeySource("key file", str(key_file))
    for wrapped in old_wrapped:  # rewrapped in place and checkpointed: not even in the WAL
        assert holders(database.parent, wrapped) == []
    assert_readable(store, cids[0])
    store.close()
    assert not pending_key_file(key_file).exists()
    assert bytes.fromhex(key_file.read_text()) != old._key
    with pytest.raises(StoreError, match="does not open"):
        Store.open(database, old)
    with sqlite3.connect(database) as db:
        rows = db.execute("SELECT id, uid, wrapped_key FROM conversations").fetchall()
    for cid, uid, wrapped in rows:
        with pytest.raises(Unauthentic):
            old.unwrap(wrapped, RecordRef(uid, cid, "key"))
    reopened = opener(database, key_file)
    for cid in cids:
        assert_readable(reopened, cid)


def test_rotation_interrupted_after_commit_finishes_at_open(database: Path,
                                                            key_file: Path) -> None:
    store = opener(database, key_file)
    cid = fill(store)
    store.rotate(write_pending_key(key_file))  # crash before the new file replaced the old
    store.close()
    assert_readable(opener(database, key_file), cid)
    assert not pending_key_file(key_file).exists()
    assert_readable(opener(database, key_file), cid)


def test_rotation_interrupted_before_commit_keeps_the_old_key(database: Path,
                                                              key_file: Path) -> None:
    store = opener(database, key_file)
    cid = fill(store)
    write_pending_key(key_file)  # crash before the database rewrapped anything
    store.close()
    old = key_file.read_bytes()
    assert_readable(opener(database, key_file), cid)
    assert not pending_key_file(key_file).exists() and key_file.read_bytes() == old


def test_rotation_to_a_passphrase(database: Path, key_file: Path) -> None:
    store = opener(database, key_file)
    cid = fill(store)
    assert rotate_keys(store, passphrase="new phrase", argon2=FAST_ARGON2).kind == "passphrase"
    store.close()
    assert not key_file.exists()  # it opens nothing now and would shadow the passphrase
    with pytest.raises(StoreLocked):
        opener(database, key_file)
    store = opener(database, key_file, passphrase="new phrase")
    assert_readable(store, cid)
    with pytest.raises(StoreError, match="needs the new passphrase"):
        rotate_keys(store)
    rotate_keys(store, passphrase="newer phrase", argon2=FAST_ARGON2)
    store.close()
    with pytest.raises(StoreError, match="does not open"):
        opener(database, key_file, passphrase="new phrase")
    assert_readable(opener(database, key_file, passphrase="newer phrase"), cid)


def test_newer_schema_is_refused(database: Path, key_file: Path) -> None:
    opener(database, key_file).close()
    with sqlite3.connect(database) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="upgrade Hush"):
        opener(database, key_file)
