"""Another local user squats the runtime directory or the socket: nothing reaches them.

The attacker (uid 65534) runs in a forked child that drops its privileges; its listener
answers like hushd (so an unguarded client would send everything and exit 0) and records
every byte it receives. The fallback runtime directory is `$TMPDIR/hush-<uid>`, so each test
points TMPDIR at its own sticky, world-writable directory, like /tmp, instead of the real /tmp.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hush.daemon import paths
from hush.daemon.client import Client
from hush.daemon.errors import HushError

from .conftest import Daemon

ATTACKER = 65534
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _serve_like_hushd(srv: socket.socket, record: int) -> None:
    """Accept clients one by one; record what they send; answer hello and every request."""
    while True:
        conn, _ = srv.accept()
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                os.write(record, line)
                frame = json.loads(line)
                if frame.get("type") == "hello":
                    reply = {"type": "hello", "protocol": frame.get("protocol"),
                             "daemon": "0", "model": "fake", "limits": {}}
                else:
                    reply = {"id": frame.get("id"), "type": "done", "result": {}}
                conn.sendall(json.dumps(reply).encode() + b"\n")


def _as_attacker(work: Callable[[], None]) -> int:
    """Fork a child that becomes uid/gid 65534 (umask 0) and runs `work`; returns its pid."""
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads; the child only
        warnings.simplefilter("ignore", DeprecationWarning)  # makes file and socket calls
        pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(ATTACKER)
            os.setuid(ATTACKER)
            os.umask(0)
            work()
        finally:
            os._exit(0)
    return pid


def _make_dir_as_attacker(path: Path) -> None:
    os.waitpid(_as_attacker(lambda: path.mkdir(mode=0o777)), 0)
    assert path.stat().st_uid == ATTACKER


@contextlib.contextmanager
def attacker_listening(sock_path: Path) -> Iterator[list[bytes]]:
    """As uid 65534: create the socket's directory 0777, then listen on the socket.

    Yields a list that holds, once the block ends, everything the listener received."""
    ready_r, ready_w = os.pipe()
    record_r, record_w = os.pipe()

    def listen() -> None:
        sock_path.parent.mkdir(mode=0o777)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(str(sock_path))
        srv.listen(8)
        os.write(ready_w, b"1")
        _serve_like_hushd(srv, record_w)

    pid = _as_attacker(listen)
    os.close(ready_w)
    os.close(record_w)
    received: list[bytes] = []
    try:
        assert os.read(ready_r, 1) == b"1", "the attacker's listener did not start"
        yield received
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(ready_r)
        with os.fdopen(record_r, "rb") as record:
            received.append(record.read())


@pytest.fixture
def shared_tmp(short_dir: Path) -> Path:
    """A directory like /tmp: every user may create entries, only their owner may remove them."""
    short_dir.chmod(0o1777)
    return short_dir


def _fallback_env(tmpdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("HUSH_SOCKET", "XDG_RUNTIME_DIR", "RUNTIME_DIRECTORY")}
    env["TMPDIR"] = str(tmpdir)
    return env


def _hush(*args: str, env: dict[str, str], input: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hush.tui.cli", *args], env=env, input=input,
                          capture_output=True, text=True, timeout=60)


def _squatted_fallback(tmpdir: Path) -> Path:
    return tmpdir / f"hush-{os.getuid()}"


@needs_root
def test_client_refuses_a_squatted_fallback_dir_and_sends_nothing(shared_tmp: Path) -> None:
    squat = _squatted_fallback(shared_tmp)
    env = _fallback_env(shared_tmp)
    with attacker_listening(squat / paths.SOCKET_NAME) as received:
        asked = _hush("ask", "my bank PIN is 4455", env=env)
        unlocked = _hush("unlock", env=env, input="correct horse\n")
        status = _hush("status", env=env)
    for result in (asked, unlocked, status):
        assert result.returncode != 0, result
        assert f"{squat} belongs to uid {ATTACKER}" in result.stderr
        assert "Traceback" not in result.stderr
    assert received == [b""]


@needs_root
@pytest.mark.parametrize("command", [["ask", "my bank PIN is 4455"], ["unlock"], ["status"],
                                     ["history", "list"]])
def test_client_sends_nothing_to_a_listener_run_by_another_user(
        shared_tmp: Path, command: list[str]) -> None:
    # A socket the user named explicitly, in a directory the attacker controls.
    sock_path = shared_tmp / "shared" / "hushd.sock"
    with attacker_listening(sock_path) as received:
        result = _hush("--socket", str(sock_path), *command, env=dict(os.environ),
                       input="correct horse\n")
    assert result.returncode != 0, result
    assert f"runs as uid {ATTACKER}" in result.stderr
    assert "nothing was sent" in result.stderr
    assert "Traceback" not in result.stderr
    assert received == [b""]


@needs_root
async def test_library_client_checks_the_peer_before_the_hello(shared_tmp: Path) -> None:
    """The UI and every subcommand connect through Client.connect; the check lives there."""
    sock_path = shared_tmp / "shared" / "hushd.sock"
    with (attacker_listening(sock_path) as received,
          pytest.raises(HushError, match=f"runs as uid {ATTACKER}") as caught):
        await Client.connect(sock_path)
    assert caught.value.code == "untrusted_daemon"
    assert received == [b""]


def _hushd_in_fallback(daemon: Daemon, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    env = {**_fallback_env(tmpdir), "HUSH_STATE_DIR": str(daemon.state_dir),
           "HUSH_CONFIG_DIR": str(daemon.config_dir), "HUSH_CACHE_DIR": str(daemon.cache_dir)}
    return subprocess.run(daemon.command(), env=env, capture_output=True, text=True, timeout=60)


@needs_root
def test_hushd_refuses_to_bind_in_a_squatted_runtime_dir(tiny_daemon: Daemon,
                                                         shared_tmp: Path) -> None:
    squat = _squatted_fallback(shared_tmp)
    _make_dir_as_attacker(squat)
    result = _hushd_in_fallback(tiny_daemon, shared_tmp)
    assert result.returncode == 2, result.stderr
    assert f"hushd: {squat} belongs to uid {ATTACKER}" in result.stderr
    assert "Traceback" not in result.stderr
    assert list(squat.iterdir()) == []  # no socket was bound inside it


def test_hushd_refuses_a_runtime_dir_others_may_write(tiny_daemon: Daemon,
                                                       short_dir: Path) -> None:
    own = _squatted_fallback(short_dir)
    own.mkdir(mode=0o700)
    own.chmod(0o777)
    result = _hushd_in_fallback(tiny_daemon, short_dir)
    assert result.returncode == 2, result.stderr
    assert f"run `chmod 700 {own}`" in result.stderr
    assert list(own.iterdir()) == []
    assert stat.S_IMODE(own.stat().st_mode) == 0o777  # reported, never silently fixed


def test_hushd_creates_the_fallback_dir_0700_and_the_client_uses_it(
        tiny_daemon: Daemon, short_dir: Path) -> None:
    tiny_daemon.socket = _squatted_fallback(short_dir) / paths.SOCKET_NAME
    env = _fallback_env(short_dir)
    env.update({k: v for k, v in tiny_daemon.env.items() if k.startswith("HUSH_")})
    del env["HUSH_SOCKET"]
    old_umask = os.umask(0)  # a permissive umask must not widen the directory hushd makes
    try:
        tiny_daemon.process = subprocess.Popen(tiny_daemon.command(), env=env,
                                               stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL)
    finally:
        os.umask(old_umask)
    tiny_daemon.wait_ready()
    runtime = tiny_daemon.socket.parent
    assert stat.S_IMODE(runtime.stat().st_mode) == 0o700
    status = _hush("status", env=env)
    assert status.returncode == 0, status.stderr
    assert "model" in status.stdout


def test_private_dir_refuses_symlinks_files_and_wide_modes(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(HushError, match="not a directory"):
        paths.private_dir(link, create=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(HushError, match="not a directory"):
        paths.private_dir(tmp_path / "file")
    real.chmod(0o750)
    with pytest.raises(HushError, match=r"mode 0750.*chmod 700"):
        paths.private_dir(real)
    paths.private_dir(real, group_may_enter=True)  # a socket shared with a group
    real.chmod(0o770)
    with pytest.raises(HushError, match=r"mode 0770.*chmod 750"):
        paths.private_dir(real, group_may_enter=True)
