"""The command line against daemons that misbehave, and files that are not files.

Each case must end with a clear `hush: …` message and a non-zero exit, never a traceback,
an exit 0 with no output, or a hang. The misbehaving daemons are real listeners on real sockets
in this process (run by the test's own uid, so the client's peer check lets them through).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import Daemon

CORPUS = Path(__file__).parent / "summarize" / "corpus"


def _close_at_once(conn: socket.socket) -> None:
    conn.close()


def _garbage_for_hello(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")


def _garbage_for_request(conn: socket.socket) -> None:
    with conn.makefile("rb") as lines:
        lines.readline()
        conn.sendall(json.dumps({"type": "hello", "protocol": 1, "daemon": "0", "model": "x",
                                 "limits": {}}).encode() + b"\n")
        lines.readline()
        conn.sendall(b'[1, 2, 3]\n{"type": "error"}\n')


_test_over = threading.Event()


def _never_answer(conn: socket.socket) -> None:
    conn.recv(65536)
    _test_over.wait(60)  # holds the connection open past the client's 10 s


@contextlib.contextmanager
def misbehaving_daemon(path: Path, behave: Callable[[socket.socket], None]) -> Iterator[None]:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(8)
    threads: list[threading.Thread] = []

    def handle(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            behave(conn)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return  # closed: the test is over
            threads.append(threading.Thread(target=handle, args=(conn,)))
            threads[-1].start()

    acceptor = threading.Thread(target=serve)
    acceptor.start()
    _test_over.clear()
    try:
        yield
    finally:
        _test_over.set()
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        acceptor.join()
        for thread in threads:
            thread.join()


def _hush(sock: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "hush.tui.cli", "--socket", str(sock), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen[str]) -> tuple[subprocess.Popen[str], str, str]:
    """Its output once it exits; a hang past 60 s is killed and fails the test."""
    try:
        out, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    return process, out, err


@pytest.mark.parametrize(("behave", "expected"), [
    (_close_at_once, "closed the connection before saying hello"),
    (_garbage_for_hello, "sent something that is not a Hush frame"),
    (_never_answer, "did not say hello within 10 s"),
])
def test_a_daemon_that_fails_the_hello_gets_a_clear_error(
        short_dir: Path, behave: Callable[[socket.socket], None], expected: str) -> None:
    sock = short_dir / "odd.sock"
    with misbehaving_daemon(sock, behave):
        running = [_hush(sock, "ask", "hello"), _hush(sock, "status")]  # side by side
        results = [_finish(p) for p in running]
    for process, out, err in results:
        assert process.returncode not in (0, None), (out, err)
        assert err.startswith("hush: ") and expected in err, err
        assert "Traceback" not in err


def test_garbage_in_answer_to_a_request_gets_a_clear_error(short_dir: Path) -> None:
    sock = short_dir / "odd.sock"
    with misbehaving_daemon(sock, _garbage_for_request):
        process, out, err = _finish(_hush(sock, "ask", "hello"))
    assert process.returncode == 1, (out, err)
    assert "sent something that is not a Hush frame" in err
    assert "Traceback" not in err


def test_summarize_refuses_what_is_not_a_regular_file(started_tiny_daemon: Daemon,
                                                      short_dir: Path) -> None:
    fifo = short_dir / "pipe.txt"
    os.mkfifo(fifo)
    folder = short_dir / "folder"
    folder.mkdir()
    cases = [(fifo, "not a regular file"), (folder, "it is a directory"),
             (short_dir / "missing.txt", "No such file or directory")]
    for path, expected in cases:
        result = started_tiny_daemon.hush("summarize", str(path), timeout=30)  # no hang
        assert result.returncode == 1, result
        assert f"hush: cannot read {path}: " in result.stderr and expected in result.stderr
        assert "Traceback" not in result.stderr


def test_summarize_follows_a_symlink_the_user_names(started_tiny_daemon: Daemon,
                                                    short_dir: Path) -> None:
    link = short_dir / "letter.txt"
    link.symlink_to(CORPUS / "complaint_letter.txt")
    result = started_tiny_daemon.hush("summarize", "--json", str(link))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["type"] == "done"
