"""What systemd sees of hushd: sd_notify messages and socket activation, with real sockets."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from hush.daemon.client import Client

from .conftest import Daemon


def _collect(sock: socket.socket, until: str, timeout: float = 60.0) -> list[str]:
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        messages.extend(data.decode().splitlines())
        if until in messages:
            return messages
    raise AssertionError(f"{until} never arrived; got {messages}")


def test_sd_notify_ready_watchdog_and_stopping(tiny_daemon: Daemon) -> None:
    path = tiny_daemon.socket.parent.parent / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        tiny_daemon.extra_env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="200000")
        tiny_daemon.start(wait=False)
        messages = _collect(notify, "READY=1")
        assert any(m.startswith("STATUS=") for m in messages)
        assert "WATCHDOG=1" in _collect(notify, "WATCHDOG=1", timeout=5)
        assert tiny_daemon.process is not None
        tiny_daemon.process.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in _collect(notify, "STOPPING=1")
        assert tiny_daemon.process.wait(30) == 0


def test_watchdog_meant_for_another_pid_is_ignored(tiny_daemon: Daemon) -> None:
    path = tiny_daemon.socket.parent.parent / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        tiny_daemon.extra_env.update(NOTIFY_SOCKET=str(path), WATCHDOG_USEC="100000",
                                     WATCHDOG_PID="1")
        tiny_daemon.start(wait=False)
        messages = _collect(notify, "READY=1")
        time.sleep(0.5)
        notify.setblocking(False)
        try:
            while data := notify.recv(4096):
                messages.extend(data.decode().splitlines())
        except BlockingIOError:
            pass
        assert "WATCHDOG=1" not in messages


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate is not installed")
async def test_socket_activation_answers_a_client_that_connected_first(
    tiny_daemon: Daemon,
) -> None:
    # systemd-socket-activate owns the socket and starts hushd on the first connection,
    # handing it over as fd 3 (LISTEN_FDS=1): the client connects before the daemon exists.
    env = tiny_daemon.env
    env.pop("HUSH_SOCKET")
    with tiny_daemon.log_path.open("ab") as log:
        activator = subprocess.Popen(
            ["systemd-socket-activate", "-l", str(tiny_daemon.socket),
             "-E", "HUSH_STATE_DIR", "-E", "HUSH_CONFIG_DIR", "-E", "HUSH_CACHE_DIR",
             "-E", "PATH", sys.executable, "-m", "hush.daemon", "--model", tiny_daemon.model],
            env=env, stderr=log,
        )
    try:
        for _ in range(200):
            if tiny_daemon.socket.exists():
                break
            time.sleep(0.05)
        async with await Client.connect(tiny_daemon.socket, timeout=60) as client:
            result = await client.call("status")
        assert result["model"] == tiny_daemon.model
        assert result["pid"] == activator.pid  # systemd-socket-activate execs the daemon
        assert "socket from systemd" in tiny_daemon.log
    finally:
        activator.send_signal(signal.SIGTERM)
        activator.wait(30)
    # The socket belongs to systemd: hushd must leave it in place when it stops.
    assert activator.returncode == 0
    assert tiny_daemon.socket.is_socket()
