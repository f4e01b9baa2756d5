"""Signals and limits of the real daemon: SIGTERM grace, SIGHUP reload, connection limits."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hush.daemon.client import Client
from hush.daemon.errors import DaemonUnavailable

from .conftest import Daemon, RawConnection

LONG = b'{"id":"long","method":"chat","params":{"message":"go","options":{"max_tokens":30000}}}\n'


def _frames_until_done(conn: RawConnection, request_id: str) -> list[dict[str, object]]:
    frames = []
    while True:
        frame = conn.frame()
        frames.append(frame)
        if frame.get("id") == request_id and frame["type"] in {"done", "error"}:
            return frames


def test_sigterm_mid_generation_cancels_after_grace_and_exits_zero(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("shutdown_grace_s: 0.5\n")
    tiny_daemon.start()
    conn = RawConnection(tiny_daemon.socket)
    conn.hello()
    conn.send(LONG)
    first = conn.frame()
    assert first["type"] == "token"
    started = time.monotonic()
    assert tiny_daemon.process is not None
    tiny_daemon.process.send_signal(signal.SIGTERM)
    frames = [first, *_frames_until_done(conn, "long")]
    done = frames[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert tiny_daemon.process.wait(30) == 0
    assert time.monotonic() - started < 10
    assert "cancelling 1 requests still running" in tiny_daemon.log
    # Nothing acknowledged is lost: the question and the part of the answer that was sent.
    sent = "".join(str(f["text"]) for f in frames if f["type"] == "token")
    tiny_daemon.start()
    kept = RawConnection(tiny_daemon.socket)
    kept.hello()
    kept.send(json.dumps({"id": "g", "method": "conversations.get",
                          "params": {"id": done["conversation"]}}).encode() + b"\n")
    messages = kept.frame()["result"]["messages"]  # type: ignore[index]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "go" and messages[1]["content"] == sent


def test_sigterm_lets_a_short_generation_finish(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("shutdown_grace_s: 30\n")
    tiny_daemon.start()
    conn = RawConnection(tiny_daemon.socket)
    conn.hello()
    conn.send(b'{"id":"s","method":"chat","params":{"message":"go","options":'
              b'{"max_tokens":3000}}}\n')
    assert conn.frame()["type"] == "token"
    assert tiny_daemon.process is not None
    tiny_daemon.process.send_signal(signal.SIGTERM)
    frames = _frames_until_done(conn, "s")
    assert frames[-1]["finish_reason"] in {"length", "stop"}
    assert tiny_daemon.process.wait(30) == 0


def test_sighup_applies_a_valid_config_and_keeps_the_old_on_error(tiny_daemon: Daemon) -> None:
    config = tiny_daemon.config_dir / "hushd.yaml"
    tiny_daemon.start()
    assert tiny_daemon.process is not None

    def reload_and_wait(marker: str) -> None:
        count = tiny_daemon.log.count(marker)
        tiny_daemon.process.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        for _ in range(200):
            if tiny_daemon.log.count(marker) > count:
                return
            time.sleep(0.05)
        raise AssertionError(f"no {marker!r} in the log:\n{tiny_daemon.log}")

    config.write_text("limits:\n  max_inflight: 1\n")
    reload_and_wait("reloaded settings")
    conn = RawConnection(tiny_daemon.socket)
    conn.hello()
    conn.send(LONG + LONG.replace(b'"long"', b'"two"'))
    codes = [f.get("code") for f in _frames_until_done(conn, "two")]
    assert "too_many_requests" in codes
    conn.close()

    config.write_text("limits: [not, a, mapping\n")
    reload_and_wait("reload failed")
    assert "invalid YAML" in tiny_daemon.log and tiny_daemon.process.poll() is None
    config.write_text("socket_mode: 0644\n")
    reload_and_wait("only on restart: socket_mode")


def test_idle_connection_is_closed(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("limits:\n  idle_timeout_s: 0.3\n")
    tiny_daemon.start()
    conn = RawConnection(tiny_daemon.socket)
    conn.hello()
    frame = conn.frame()
    assert frame["code"] == "idle_timeout"
    assert conn.sock.recv(10) == b""  # closed


def test_connection_limit(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("limits:\n  max_connections: 2\n")
    tiny_daemon.start()
    first = RawConnection(tiny_daemon.socket)
    first.hello()
    # wait_ready's probe connection may still be closing: count only ours.
    for attempt in range(100):
        first.send(f'{{"id":"s{attempt}","method":"status","params":{{}}}}\n'.encode())
        if first.frame()["result"]["connections"] == 1:  # type: ignore[index]
            break
        time.sleep(0.05)
    second = RawConnection(tiny_daemon.socket)
    second.hello()
    third = RawConnection(tiny_daemon.socket)
    assert third.frame()["code"] == "too_many_connections"
    first.close()
    time.sleep(0.5)
    fourth = RawConnection(tiny_daemon.socket)
    assert fourth.hello()["type"] == "hello", tiny_daemon.log  # the freed slot is usable


async def test_client_survives_daemon_restart(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    client = await Client.connect(tiny_daemon.socket)
    tiny_daemon.stop()
    with pytest.raises(DaemonUnavailable):
        await client.call("status")
    restart = asyncio.create_task(asyncio.to_thread(tiny_daemon.start))
    await client.reconnect(timeout=60)  # backs off until the daemon is back
    await restart
    assert (await client.call("status"))["model"] == "tiny"
    await client.close()


_line = st.binary(max_size=300).filter(lambda b: b"\n" not in b)
_json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["id", "method", "params", "type", "x"]), children,
                      max_size=4),
    max_leaves=12,
).map(lambda v: json.dumps(v).encode())


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(frames=st.lists(_line | _json_like, max_size=8))
def test_random_frames_never_break_the_daemon(started_tiny_daemon: Daemon,
                                              frames: list[bytes]) -> None:
    conn = RawConnection(started_tiny_daemon.socket)
    try:
        conn.hello()
        conn.send(b"".join(f + b"\n" for f in frames))
        conn.send(b'{"id":"probe","method":"status","params":{}}\n')
        for frame in _frames_until_done(conn, "probe"):
            assert frame["type"] in {"token", "done", "error", "progress", "policy"}
            if frame["type"] == "error":
                assert isinstance(frame["code"], str) and frame["message"]
    finally:
        conn.close()
