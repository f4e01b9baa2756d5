"""Conversations through the real daemon: kept encrypted, continued, listed, shredded."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from hush.daemon.client import Client, RequestFailed

from .conftest import Daemon

CANARY = "zebra-canary-7f3a91"


def _every_byte_under(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file())


def _assert_no_canary(daemon: Daemon) -> None:
    data = _every_byte_under(daemon.state_dir) + _every_byte_under(daemon.config_dir)
    for form in (CANARY.encode(), CANARY.encode("utf-16-le"), CANARY.upper().encode()):
        assert form not in data


async def _chat(client: Client, message: str, **params: object) -> dict[str, object]:
    events = [e async for e in client.request(
        "chat", {"message": message, "options": {"max_tokens": 6}, **params})]
    done = events[-1]
    assert done["type"] == "done"
    return dict(done)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
async def test_canary_never_reaches_the_disk(tiny_daemon: Daemon, stop: int) -> None:
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        done = await _chat(client, f"remember {CANARY} please", system=f"sys {CANARY}")
        await _chat(client, f"and again {CANARY}", conversation=done["conversation"])
        conversation = await client.call("conversations.get", {"id": done["conversation"]})
    assert CANARY in conversation["messages"][0]["content"]  # it was stored...
    assert any(p.name.startswith("conversations.db") for p in tiny_daemon.state_dir.iterdir())
    _assert_no_canary(tiny_daemon)  # ...but never in the clear
    tiny_daemon.stop(stop)
    _assert_no_canary(tiny_daemon)
    tiny_daemon.start()  # and the data survived the stop
    async with await Client.connect(tiny_daemon.socket) as client:
        again = await client.call("conversations.get", {"id": done["conversation"]})
    assert [m["role"] for m in again["messages"]] == ["user", "assistant", "user", "assistant"]


async def test_conversation_continues_with_its_history(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        first = await _chat(client, "first question")
        second = await _chat(client, "follow up", conversation=first["conversation"])
        assert second["conversation"] == first["conversation"]
        assert second["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"]  # type: ignore[index]
        listed = await client.call("conversations.list")
        assert listed["total"] == 1
        assert listed["conversations"][0]["title"] == "first question"
        assert listed["conversations"][0]["message_count"] == 4


async def test_users_cannot_reach_each_others_conversations(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        with pytest.raises(RequestFailed) as info:
            await client.call("conversations.get", {"id": "0" * 32})
        assert info.value.code == "not_found"
        with pytest.raises(RequestFailed):
            await _chat(client, "hi", conversation="f" * 32)


def test_history_commands(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    asked = tiny_daemon.hush("ask", "--json", "--max-tokens", "4", "a question about tides")
    assert asked.returncode == 0, asked.stderr
    cid = json.loads(asked.stdout.splitlines()[-1])["conversation"]
    listed = tiny_daemon.hush("history", "list")
    assert cid in listed.stdout and "a question about tides" in listed.stdout
    shown = tiny_daemon.hush("history", "show", cid)
    assert "USER: a question about tides" in shown.stdout
    found = tiny_daemon.hush("history", "search", "tides")
    assert cid in found.stdout
    exported = tiny_daemon.hush("history", "export", "--format", "json", cid)
    assert json.loads(exported.stdout)["messages"][0]["content"] == "a question about tides"
    assert tiny_daemon.hush("history", "rename", cid, "Tides").returncode == 0
    assert "Tides" in tiny_daemon.hush("history", "list").stdout
    assert tiny_daemon.hush("history", "delete", cid).returncode == 0
    gone = tiny_daemon.hush("history", "show", cid)
    assert gone.returncode == 1 and "hush:" in gone.stderr
    assert b"tides" not in _every_byte_under(tiny_daemon.state_dir)


def test_passphrase_rotation_locks_the_next_start(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    assert tiny_daemon.hush("ask", "--max-tokens", "3", "keep this").returncode == 0
    rotated = tiny_daemon.hush("keys", "rotate", "--passphrase", input="correct horse battery\n")
    assert rotated.returncode == 0, rotated.stderr
    assert not (tiny_daemon.config_dir / "hush.key").exists()
    tiny_daemon.stop()
    tiny_daemon.start()
    locked = tiny_daemon.hush("ask", "--max-tokens", "3", "hello")
    assert locked.returncode == 1 and "hush unlock" in locked.stderr
    status = json.loads(tiny_daemon.hush("status", "--json").stdout)
    assert status["store"] == "locked"
    wrong = tiny_daemon.hush("unlock", input="not it\n")
    assert wrong.returncode == 1
    assert tiny_daemon.hush("unlock", input="correct horse battery\n").returncode == 0
    listed = tiny_daemon.hush("history", "list")
    assert "keep this" in listed.stdout
