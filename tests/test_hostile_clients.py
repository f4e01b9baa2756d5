"""Clients that attack the daemon: hold connections, read nothing, act as another local user.
The daemon must keep serving everyone else, and say what it refused."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hush.daemon.engine.generator import Engine, GenerationOptions
from hush.daemon.models import ModelHolder
from hush.daemon.scheduler import GenerationStats, Scheduler

from .conftest import Daemon, RawConnection

NOBODY, OTHER = 65534, 65533
HELLO = b'{"type":"hello","protocol":1}\n'
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


def _open_to_everyone(daemon: Daemon, settings: str = "") -> None:
    """Socket mode 0666 and these uids allowed: only the daemon's own checks stand in between."""
    (daemon.config_dir / "hushd.yaml").write_text(
        f"socket_mode: 0666\nallow_uids: [{NOBODY}, {OTHER}]\n{settings}")
    daemon.start()
    daemon.socket.parent.chmod(0o755)
    daemon.socket.parent.parent.chmod(0o755)


@contextlib.contextmanager
def _as_user(uid: int, steps: Callable[[], object]) -> Iterator[object]:
    """Run `steps` in a child process that is `uid`; yield what it returned (as JSON) while
    the child still holds whatever it opened, and end the child when the block ends."""
    results_r, results_w = os.pipe()
    release_r, release_w = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads; the child only
        warnings.simplefilter("ignore", DeprecationWarning)  # does socket calls, then _exit
        pid = os.fork()
    if pid == 0:
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            try:
                result = steps()
            except BaseException as exc:
                result = {"crash": repr(exc)}
            os.write(results_w, json.dumps(result).encode() + b"\n")
            os.read(release_r, 1)
        finally:
            os._exit(0)
    os.close(results_w)
    os.close(release_r)
    try:
        with os.fdopen(results_r) as pipe:
            yield json.loads(pipe.readline())
    finally:
        os.write(release_w, b"x")
        os.close(release_w)
        os.waitpid(pid, 0)


def _hellos(socket: Path, count: int) -> Callable[[], list[object]]:
    """Open `count` connections, each saying hello; the daemon's first answer to each."""
    def steps() -> list[object]:
        answers = []
        for _ in range(count):
            conn = RawConnection(socket)
            with contextlib.suppress(BrokenPipeError):  # a refusal may close it first
                conn.send(HELLO)
            answers.append(conn.frame())
        return answers
    return steps


def _codes(answers: object) -> list[object]:
    assert isinstance(answers, list), answers
    return [a.get("code", a.get("type")) for a in answers]


def _wait_for_log(daemon: Daemon, text: str, count: int = 1, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while daemon.log.count(text) < count:
        assert time.monotonic() < deadline, f"{count}x {text!r} not in the log:\n{daemon.log}"
        time.sleep(0.05)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _closed_by_daemon(conn: RawConnection, timeout: float = 15) -> bool:
    """Read what is left; True when the daemon closed the connection within `timeout`."""
    conn.sock.settimeout(timeout)
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while conn.sock.recv(1 << 20):
            pass
        return True
    return False


# --- connection exhaustion --------------------------------------------------------------------

def test_connections_that_never_say_hello_are_dropped_and_free_their_slots(
        tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("limits:\n  max_connections: 5\n")
    tiny_daemon.start()
    squatters = [RawConnection(tiny_daemon.socket) for _ in range(5)]
    squatters[0].send(b'{"type":')  # a hello that trickles in does not reset the deadline
    refused = RawConnection(tiny_daemon.socket)  # every slot is taken (by squatters)
    assert refused.frame()["code"] == "too_many_connections"
    for squatter in squatters[:4]:  # the fifth may have met the start-up probe's slot
        squatter.sock.settimeout(5 + 10)  # hello_timeout_s is 5 by default
        frame = squatter.frame()
        assert frame["code"] == "hello_timeout" and "5 s" in str(frame["message"]), frame
        assert squatter.sock.recv(10) == b""
    result = tiny_daemon.hush("status", timeout=30)
    assert result.returncode == 0, result.stderr


@needs_root
def test_one_user_cannot_take_every_connection(tiny_daemon: Daemon) -> None:
    # Defaults: 8 per uid, and 4 of max_connections kept for root and the daemon's own uid.
    _open_to_everyone(tiny_daemon, "limits:\n  max_connections: 18\n")
    with _as_user(NOBODY, _hellos(tiny_daemon.socket, 9)) as nobody:
        assert _codes(nobody) == ["hello"] * 8 + ["too_many_connections"]
        assert isinstance(nobody, list) and f"uid {NOBODY} already has 8" in nobody[8]["message"]
        # Another user still gets in, up to what is kept for the owner (18 - 4 - 8) ...
        with _as_user(OTHER, _hellos(tiny_daemon.socket, 7)) as other:
            assert _codes(other) == ["hello"] * 6 + ["too_many_connections"]
            assert isinstance(other, list) and "other users" in other[6]["message"]
            # ... and the owner (root here) still does.
            owner = RawConnection(tiny_daemon.socket)
            assert owner.hello()["type"] == "hello"


# --- clients that read nothing ------------------------------------------------------------------

def _chat(request_id: str, max_tokens: int = 30000) -> bytes:
    return json.dumps({"id": request_id, "method": "chat",
                       "params": {"message": "go", "options": {"max_tokens": max_tokens}}}
                      ).encode() + b"\n"


def test_clients_that_read_nothing_are_cut_off_and_others_get_answers(
        tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text(
        "limits:\n  max_unsent_bytes: 4096\n  send_timeout_s: 1\n")
    tiny_daemon.start()
    assert tiny_daemon.process is not None
    before = _rss_mib(tiny_daemon.process.pid)
    stalled = []
    for n in range(3):
        conn = RawConnection(tiny_daemon.socket)
        conn.send(HELLO + b"".join(_chat(f"c{n}r{r}") for r in range(2)))
        stalled.append(conn)
    answer = tiny_daemon.hush("ask", "--max-tokens", "5", "hello", timeout=60)
    assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
    _wait_for_log(tiny_daemon, "read nothing for 1 s; cancelling", count=3)
    assert all(_closed_by_daemon(conn) for conn in stalled)
    assert _rss_mib(tiny_daemon.process.pid) - before < 100
    status = json.loads(tiny_daemon.hush("status", "--json").stdout)
    assert status["connections"] <= 1 and status["generating"] == 0, status


def test_a_client_that_reads_nothing_is_cut_off_before_its_buffers_fill(
        tiny_daemon: Daemon) -> None:
    # Buffers far larger than the answers: like the real model's ~10 tokens a second against
    # 64 KiB, output never fills them, so only the missing reads can tell.
    (tiny_daemon.config_dir / "hushd.yaml").write_text(
        "limits:\n  max_unsent_bytes: 268435456\n  send_timeout_s: 1\n")
    tiny_daemon.start()
    stalled = RawConnection(tiny_daemon.socket)
    stalled.send(HELLO + _chat("r0") + _chat("r1"))
    deadline = time.monotonic() + 1 + 9
    while True:  # reading nothing ourselves: any read would count as the client's
        status = json.loads(tiny_daemon.hush("status", "--json").stdout)
        if status["connections"] <= 1 and status["generating"] == 0:
            break
        assert time.monotonic() < deadline, f"not cut off: {status}\n{tiny_daemon.log}"
        time.sleep(0.5)
    assert "read nothing for 1 s; cancelling its 2 requests" in tiny_daemon.log
    assert _closed_by_daemon(stalled)


def test_a_client_that_reads_slowly_but_steadily_is_served(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("limits:\n  send_timeout_s: 2\n")
    tiny_daemon.start()
    slow = RawConnection(tiny_daemon.socket)
    slow.send(HELLO + _chat("slow"))
    taken = 0
    for _ in range(8):  # one read a second, well behind the output: 8 s, four timeouts
        time.sleep(1)
        chunk = slow.sock.recv(65536)
        assert chunk, f"cut off after {taken} bytes:\n{tiny_daemon.log}"
        taken += len(chunk)
    assert "read nothing" not in tiny_daemon.log
    status = json.loads(tiny_daemon.hush("status", "--json").stdout)
    assert status["generating"] == 1, status


def _long_chat(request_id: str) -> bytes:
    """An answer that runs to max_tokens: this hot, the model all but never ends its turn."""
    return json.dumps({"id": request_id, "method": "chat",
                       "params": {"message": "Tell me a long story.",
                                  "options": {"max_tokens": 2000, "temperature": 3.0}}}
                      ).encode() + b"\n"


def _stall(socket: Path, clients: int, requests: int) -> Callable[[], str]:
    """Open `clients` connections that each ask `requests` long answers and read nothing
    after the daemon's hello."""
    def steps() -> str:
        for c in range(clients):
            conn = RawConnection(socket)
            conn.hello()
            conn.send(b"".join(_long_chat(f"c{c}r{r}") for r in range(requests)))
        return "sent"
    return steps


@needs_root
def test_clients_that_read_nothing_do_not_keep_the_real_model_from_others(
        real_daemon: Daemon) -> None:
    # Another user, so the victim's request has its own turn in the scheduler's round robin.
    _open_to_everyone(real_daemon, "limits:\n  send_timeout_s: 5\n")
    with _as_user(NOBODY, _stall(real_daemon.socket, 3, 8)) as sent:
        assert sent == "sent"
        started = time.monotonic()
        answer = real_daemon.hush("ask", "--max-tokens", "32", "Say hello.", timeout=120)
        took = time.monotonic() - started
        assert answer.returncode == 0 and answer.stdout.strip(), answer.stderr
        # send_timeout_s for the non-readers to be cut off, then one short answer, shared.
        assert took < 5 + 25, real_daemon.log
        _wait_for_log(real_daemon, "read nothing for 5 s; cancelling its 8 requests", count=3)


async def test_a_worker_that_frees_up_goes_to_a_peer_with_nothing_decoding(
        tiny_cache: Path) -> None:
    # The real scheduler in-process: peer 1 decodes on both workers and queued a third long
    # answer before peer 2 asked. When one of peer 1's answers is cut off, peer 2 goes next.
    models = ModelHolder(tiny_cache / "models", "tiny",
                         functools.partial(Engine.load, intra_threads=1, inter_threads=2),
                         keep_alive_s=None)
    scheduler = Scheduler(models, max_queued=32, workers=2, max_batch=1)
    scheduler.start()
    stops = [threading.Event() for _ in range(4)]

    async def run(peer: int, max_tokens: int, cancel: threading.Event) -> None:
        stream = scheduler.generate(peer, [{"role": "user", "content": "go"}],
                                    GenerationOptions(max_tokens=max_tokens), GenerationStats(),
                                    cancel)
        async for _piece in stream:
            pass

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the scheduler never got there")

    hog = [asyncio.create_task(run(1, 60000, stops[i])) for i in range(2)]
    try:
        await until(lambda: scheduler.active == 2)
        hog.append(asyncio.create_task(run(1, 60000, stops[2])))
        await until(lambda: scheduler.waiting == 1)
        other = asyncio.create_task(run(2, 2, stops[3]))
        await until(lambda: scheduler.waiting == 2)
        stops[0].set()  # e.g. a client cut off for reading nothing
        await asyncio.wait_for(other, 10)
    finally:
        for stop in stops:
            stop.set()
        await asyncio.gather(*hog, return_exceptions=True)
        await scheduler.close()
        models.close()


def test_sigterm_exits_within_the_grace_whatever_a_stuck_client_does(
        tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("shutdown_grace_s: 1\n")
    tiny_daemon.start()
    assert tiny_daemon.process is not None
    stuck = RawConnection(tiny_daemon.socket)
    stuck.send(HELLO + _chat("stuck"))
    time.sleep(1)  # its answer fills the socket buffers; the client never reads
    tiny_daemon.process.send_signal(signal.SIGTERM)
    assert tiny_daemon.process.wait(1 + 8) == 0, tiny_daemon.log
    assert "stopped" in tiny_daemon.log and "Traceback" not in tiny_daemon.log, tiny_daemon.log
    stuck.close()


# --- decisions for everyone -----------------------------------------------------------------

@needs_root
def test_only_the_service_owner_may_switch_the_model(tiny_daemon: Daemon) -> None:
    _open_to_everyone(tiny_daemon)
    use = b'{"id":"u","method":"models.use","params":{"name":"tiny"}}\n'

    def switch() -> object:
        conn = RawConnection(tiny_daemon.socket)
        conn.hello()
        conn.send(use)
        return conn.frame()

    with _as_user(NOBODY, switch) as answer:
        assert isinstance(answer, dict) and answer.get("code") == "forbidden", answer
        assert "only root or the daemon's own user" in answer["message"]
    assert "switched the model" not in tiny_daemon.log
    owner = RawConnection(tiny_daemon.socket)
    owner.hello()
    owner.send(use)
    assert owner.frame()["type"] == "done"
    assert f"uid {os.getuid()} switched the model to tiny" in tiny_daemon.log
