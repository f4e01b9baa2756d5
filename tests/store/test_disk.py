"""What is on disk: no canary in any byte under the state directory (open, closed, SIGKILLed),
every acknowledged append survives SIGKILL, and a delete leaves nothing recoverable."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hush.daemon.store import Kek, KeySource, Store
from hush.daemon.store.crypto import RecordRef
from tests.conftest import Daemon
from tests.store.conftest import files_under, holders, opener

ALICE = 1000


def encodings(text: str) -> list[bytes]:
    return [text.encode(), text.encode("utf-16-le"), text.lower().encode()]


def assert_absent(directory: Path, canary: str) -> None:
    assert files_under(directory), "the store wrote nothing at all?"
    for needle in encodings(canary):
        assert holders(directory, needle) == [], f"{needle!r} found on disk"


def test_canary_never_reaches_disk(database: Path, key_file: Path) -> None:
    canary = f"CANARY-{secrets.token_hex(8)}"
    store = opener(database, key_file)
    cid = store.create_conversation(ALICE, title=f"title {canary}", system=f"system {canary}")
    for n in range(50):
        store.append(ALICE, cid, "user", f"turn {n}: my secret is {canary}")
        store.append(ALICE, cid, "assistant", f"I will remember {canary} " * 20)
    store.set_summary(ALICE, cid, f"summary {canary}")
    store.rename(ALICE, cid, f"renamed {canary}")
    assert len(store.search(ALICE, canary)) == 50  # limit; search works in memory
    assert_absent(database.parent, canary)  # database, WAL and shm while open
    store.close()
    assert_absent(database.parent, canary)
    reopened = opener(database, key_file)
    assert reopened.get(ALICE, cid).title == f"renamed {canary}"
    reopened.close()
    assert_absent(database.parent, canary)


APPENDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from hush.daemon.store import open_store

    database, key_file, canary = sys.argv[1:4]
    store = open_store(Path(database), credentials_dir=None, key_file=Path(key_file))
    cid = store.create_conversation(1000, title=canary)
    print(cid, flush=True)
    for n in range(1000):
        # Printed only after append returned, i.e. after the commit: an acknowledgement.
        print(store.append(1000, cid, "user", f"{canary} #{n}"), flush=True)
""")


def test_sigkill_during_appends_loses_no_acknowledged_message(database: Path,
                                                              key_file: Path) -> None:
    canary = f"CANARY-{secrets.token_hex(8)}"
    process = subprocess.Popen(
        [sys.executable, "-c", APPENDER, str(database), str(key_file), canary],
        stdout=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    cid = process.stdout.readline().strip()
    acknowledged: list[int] = []
    for line in process.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == 300:
            process.send_signal(signal.SIGKILL)
            break
    acknowledged += [int(line) for line in process.stdout]  # already written before the kill
    process.stdout.close()
    assert process.wait(30) == -signal.SIGKILL
    assert acknowledged == list(range(len(acknowledged))) and len(acknowledged) >= 300

    assert_absent(database.parent, canary)  # the WAL a killed process left behind included
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    store = opener(database, key_file)
    conversation = store.get(ALICE, cid)
    assert conversation.failures == ()
    assert conversation.title == canary
    contents = [m.content for m in conversation.messages]
    assert contents[: len(acknowledged)] == [f"{canary} #{n}" for n in acknowledged]
    assert len(contents) <= len(acknowledged) + 1  # at most one committed, unacknowledged
    store.close()
    assert_absent(database.parent, canary)


def test_delete_leaves_no_recoverable_byte(database: Path, key_file: Path) -> None:
    canary = f"CANARY-{secrets.token_hex(8)}"
    store = opener(database, key_file)
    keep = store.create_conversation(ALICE, title="keep")
    store.append(ALICE, keep, "user", "keep this")
    doomed = store.create_conversation(ALICE, title=canary, system=canary)
    for n in range(30):
        store.append(ALICE, doomed, "user", f"{canary} {n} " + "x" * 3000)  # overflow pages too
    store.append(ALICE, keep, "user", "and this")

    with sqlite3.connect(database) as reader:
        wrapped, title = reader.execute(
            "SELECT wrapped_key, title FROM conversations WHERE id = ?", (doomed,)).fetchone()
        bodies = [body for (body,) in reader.execute(
            "SELECT body FROM messages WHERE conversation_id = ?", (doomed,))]
    reader.close()
    kek = Kek(bytes.fromhex(key_file.read_text()), KeySource("key file"))
    data_key = kek.unwrap(wrapped, RecordRef(ALICE, doomed, "key"))
    secrets_on_disk = [wrapped, title, data_key, doomed.encode(), *[b[-32:] for b in bodies]]
    assert holders(database.parent, wrapped), "the wrapped key should be on disk before delete"

    store.delete(ALICE, doomed)
    for needle in secrets_on_disk:
        assert holders(database.parent, needle) == [], "deleted bytes are still on disk"
    assert_absent(database.parent, canary)
    assert [m.content for m in store.get(ALICE, keep).messages] == ["keep this", "and this"]
    store.close()
    for needle in secrets_on_disk:
        assert holders(database.parent, needle) == []


def test_interrupted_delete_is_finished_at_open(database: Path, key_file: Path) -> None:
    store = opener(database, key_file)
    doomed = store.create_conversation(ALICE, title="doomed")
    store.append(ALICE, doomed, "user", "gone")
    store.close()
    # The first commit of a delete (the shredded key) happened; the crash came before the rows.
    with sqlite3.connect(database) as db:
        (body,) = db.execute("SELECT body FROM messages").fetchone()
        db.execute("UPDATE conversations SET wrapped_key = NULL")
    db.close()
    store = opener(database, key_file)
    assert store.list(ALICE) == []
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM messages").fetchone() == (0,)
    db.close()
    assert holders(database.parent, body[-32:]) == []
    store.close()


def test_store_files_stay_private(database: Path, key_file: Path) -> None:
    store: Store = opener(database, key_file)
    store.append(ALICE, store.create_conversation(ALICE), "user", "x")
    assert (database.parent.stat().st_mode & 0o077) == 0
    for path in files_under(database.parent):
        assert (path.stat().st_mode & 0o077) == 0, path
    store.close()


def _read_only_mounts() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind -o ro / /"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


@pytest.mark.skipif(not _read_only_mounts(),
                    reason="needs root and mount namespaces (unshare -m) for a read-only mount")
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_read_only_state_dir_is_a_clear_error(tiny_daemon: Daemon, existing: bool) -> None:
    if existing:
        tiny_daemon.start()
        assert tiny_daemon.hush("ask", "--max-tokens", "3", "hello").returncode == 0
        assert tiny_daemon.stop() == 0
    state = str(tiny_daemon.state_dir)
    # Root ignores file modes, so the state directory is made read-only the way a read-only
    # file system is: a read-only bind mount in a mount namespace of hushd's own.
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind -o ro "$1" "$1" && shift && exec "$@"',
         "sh", state, *tiny_daemon.command()],
        env=tiny_daemon.env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("hushd: cannot open the conversation store") and state in last
    assert "not writable" in last, last
    assert "--state-dir" in last
