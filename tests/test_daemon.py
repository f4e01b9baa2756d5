"""The real hushd process on a real Unix socket, with the tiny model."""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import stat
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from hush.daemon.cli import setup_logging
from hush.daemon.client import Client, RequestFailed
from hush.daemon.errors import DaemonUnavailable

from .conftest import Daemon, RawConnection

DAEMON = Path(__file__).resolve().parents[1] / "daemon"


async def test_chat_streams_tokens_then_done_with_usage(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        assert client.hello is not None and client.hello["model"] == "tiny"
        events = [e async for e in client.request(
            "chat", {"message": "hello", "options": {"max_tokens": 12}})]
    tokens = [e for e in events if e["type"] == "token"]
    done = events[-1]
    assert done["type"] == "done" and len(tokens) >= 1
    assert done["usage"]["completion_tokens"] >= len(tokens)
    assert done["usage"]["completion_tokens"] <= 12
    assert done["usage"]["prompt_tokens"] > 0
    assert done["finish_reason"] in {"stop", "length"}


def test_socket_is_private(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    mode = stat.S_IMODE(tiny_daemon.socket.stat().st_mode)
    assert mode == 0o600
    assert stat.S_IMODE(tiny_daemon.socket.parent.stat().st_mode) == 0o700


def test_bad_frames_get_errors_and_the_connection_keeps_serving(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    conn = RawConnection(tiny_daemon.socket)
    conn.send(b'{"id":"1","method":"status"}\n')
    assert conn.frame()["code"] == "no_hello"
    assert conn.hello()["type"] == "hello"
    cases = [
        (b"this is not json\n", "bad_frame"),
        (b'{"id":"x","method":"status","params":{}}\xff\n', "bad_frame"),
        (b"x" * (2 * 1024 * 1024) + b"\n", "frame_too_large"),
        (b"[" * 10_000 + b"]" * 10_000 + b"\n", "too_deep"),
        (b'{"id":"2","method":"fly","params":{}}\n', "unknown_method"),
        (b'{"id":"3","method":"chat","params":{"message":1}}\n', "bad_request"),
        (b'{"id":"4","method":"chat","params":{"message":"hi","x":1}}\n', "bad_request"),
    ]
    for data, code in cases:
        conn.send(data)
        frame = conn.frame()
        assert frame["type"] == "error" and frame["code"] == code, (data[:30], frame)
        assert frame["message"]
    conn.send(b'{"id":"5","method":"status","params":{}}\n')
    frame = conn.frame()
    assert frame["type"] == "done" and frame["id"] == "5"
    conn.close()


def test_duplicate_request_id_is_rejected(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    conn = RawConnection(tiny_daemon.socket)
    conn.hello()
    chat = b'{"id":"same","method":"chat","params":{"message":"hi","options":{"max_tokens":200}}}\n'
    conn.send(chat + chat)
    frames = []
    while True:
        frame = conn.frame()
        frames.append(frame)
        if frame["type"] == "done":
            break
    errors = [f for f in frames if f["type"] == "error"]
    assert [e["code"] for e in errors] == ["duplicate_id"]
    conn.close()


async def test_cancel_stops_a_generation(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        events = []
        async for event in client.request(
            "chat", {"message": "go", "options": {"max_tokens": 4000}}, request_id="long"
        ):
            events.append(event)
            if len(events) == 3:
                await client.call("cancel", {"request_id": "long"})
    done = events[-1]
    assert done["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] < 4000


async def test_other_clients_are_served_while_one_sends_garbage(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    bad = RawConnection(tiny_daemon.socket)
    bad.send(b"\x00\x01garbage without newline" * 1000)
    async with await Client.connect(tiny_daemon.socket) as client:
        result = await client.call("status")
    assert result["model"] == "tiny"
    bad.close()


def test_sigterm_stops_cleanly_and_removes_the_socket(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    assert tiny_daemon.stop(signal.SIGTERM) == 0
    assert not tiny_daemon.socket.exists()
    assert "stopped" in tiny_daemon.log


def test_stale_socket_is_replaced_and_live_one_refused(tiny_daemon: Daemon) -> None:
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(tiny_daemon.socket))
    stale.close()  # the file stays, nobody listens: what a crash leaves behind
    tiny_daemon.start()
    second = subprocess.run(tiny_daemon.command(), env=tiny_daemon.env, capture_output=True,
                            text=True, timeout=60)
    assert second.returncode != 0
    assert "already listening" in second.stderr
    assert tiny_daemon.process is not None and tiny_daemon.process.poll() is None


def test_missing_model_says_how_to_pull_it(tiny_daemon: Daemon) -> None:
    tiny_daemon.model = "no-such-model"
    result = subprocess.run(tiny_daemon.command(), env=tiny_daemon.env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode != 0
    assert "hush model pull no-such-model" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_hush_without_daemon_says_how_to_start_it(tiny_daemon: Daemon) -> None:
    result = tiny_daemon.hush("ask", "hello")
    assert result.returncode == 69
    assert "hushd is not running" in result.stderr and "start it" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    status = tiny_daemon.hush("status")
    assert status.returncode == 69


def test_hush_ask_json_prints_events_ending_with_done(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    result = tiny_daemon.hush("ask", "--json", "--max-tokens", "5", "hello")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["type"] == "done"
    assert {"prompt_tokens", "completion_tokens"} <= set(events[-1]["usage"])
    assert all(e["type"] == "token" for e in events[:-1])


def test_hush_ask_reads_the_prompt_from_stdin(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    result = tiny_daemon.hush("ask", "--max-tokens", "3", input="from stdin\n")
    assert result.returncode == 0, result.stderr
    empty = tiny_daemon.hush("ask", input="   ")
    assert empty.returncode == 2 and "nothing to ask" in empty.stderr


async def test_connection_refused_for_wrong_protocol_version(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    conn = RawConnection(tiny_daemon.socket)
    conn.send(b'{"type":"hello","protocol":99}\n')
    frame = conn.frame()
    assert frame["code"] == "protocol_version" and "99" in str(frame["message"])
    conn.close()


async def test_client_reports_a_daemon_that_is_gone(tiny_daemon: Daemon) -> None:
    with pytest.raises(DaemonUnavailable):
        await Client.connect(tiny_daemon.socket)
    tiny_daemon.start()
    client = await Client.connect(tiny_daemon.socket)
    tiny_daemon.stop(signal.SIGKILL)
    with pytest.raises((DaemonUnavailable, RequestFailed)):
        await asyncio.wait_for(client.call("status"), 10)
    await client.close()


def test_no_network_sockets_opened(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    assert tiny_daemon.process is not None
    fd_dir = Path(f"/proc/{tiny_daemon.process.pid}/fd")
    inodes = {os.readlink(fd_dir / fd) for fd in os.listdir(fd_dir)}
    sockets = {i[len("socket:["):-1] for i in inodes if i.startswith("socket:[")}
    inet = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            inet.add(line.split()[9])
    assert sockets and not sockets & inet


def test_module_entry_points_exist() -> None:
    for module in ("hush.daemon", "hush.tui.cli"):
        result = subprocess.run([sys.executable, "-m", module, "--version"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout.strip()


def _hello_as_nobody(daemon: Daemon, groups: list[int]) -> dict[str, object]:
    """Connect as uid 65534 with these supplementary groups; return the daemon's first frame."""
    # Open the socket's permissions so only SO_PEERCRED stands between "nobody" and the daemon.
    daemon.socket.parent.chmod(0o755)
    daemon.socket.parent.parent.chmod(0o755)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():  # 3.12+ warns about fork with threads; the child only
        warnings.simplefilter("ignore", DeprecationWarning)  # does socket calls, then _exit
        pid = os.fork()
    if pid == 0:
        try:
            os.setgroups(groups)
            os.setgid(65534)
            os.setuid(65534)
            conn = RawConnection(daemon.socket)
            with contextlib.suppress(BrokenPipeError):  # a refusal may close it first
                conn.send(b'{"type":"hello","protocol":1}\n')
            os.write(write_end, json.dumps(conn.frame()).encode())
        except BaseException as exc:
            os.write(write_end, json.dumps({"crash": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        answer: dict[str, object] = json.loads(pipe.read())
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_peer_with_another_uid_is_refused(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("socket_mode: 0666\n")
    tiny_daemon.start()
    answer = _hello_as_nobody(tiny_daemon, [])
    assert answer.get("code") == "forbidden", answer
    assert "uid 65534" in str(answer["message"])
    assert "refused connection from uid 65534" in tiny_daemon.log


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_peer_in_an_allowed_supplementary_group_gets_in(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text(
        "socket_mode: 0666\nallow_gids: [4242]\n")
    tiny_daemon.start()
    answer = _hello_as_nobody(tiny_daemon, [4242])  # 4242 only as a supplementary group
    assert answer.get("type") == "hello", answer


def test_repetition_penalty_from_the_request_else_hushd_yaml(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("repetition_penalty: 1.0\n")
    tiny_daemon.start()

    def ask(*options: str) -> str:
        result = tiny_daemon.hush("ask", "--max-tokens", "40", *options, "hello there")
        assert result.returncode == 0, result.stderr
        return result.stdout

    configured = ask()
    assert configured == ask("--repetition-penalty", "1.0")
    assert configured != ask("--repetition-penalty", "2.0")


@pytest.mark.parametrize("workers", [1, 2])
def test_a_seed_gives_the_same_answer_whatever_ran_before(tiny_daemon: Daemon,
                                                          workers: int) -> None:
    # CTranslate2's random seed is process-wide and each of its threads re-seeds lazily: a
    # seed set for one request used to leak into the next unseeded ones (identical pairs),
    # and unseeded sampling before a seeded request changed what the seed gave.
    (tiny_daemon.config_dir / "hushd.yaml").write_text(
        f"decode_workers: {workers}\nintra_threads: 1\n")
    tiny_daemon.start()

    def ask(*options: str) -> str:
        result = tiny_daemon.hush("ask", "--max-tokens", "24", "--temperature", "1.0",
                                  *options, "hello there")
        assert result.returncode == 0, result.stderr
        return result.stdout

    unseeded_first = [ask() for _ in range(2)]
    seeded = [ask("--seed", "5") for _ in range(3)]
    unseeded_after = [ask() for _ in range(3)]
    seeded_again = ask("--seed", "5")
    assert len(set(seeded)) == 1 and seeded_again == seeded[0]
    unseeded = [*unseeded_first, *unseeded_after]
    assert len(set(unseeded)) == len(unseeded), "unseeded answers repeated each other"
    assert seeded[0] not in unseeded


@pytest.mark.parametrize(("variable", "value", "valid"), [
    ("CT2_FORCE_CPU_ISA", "AVX512_VNNI", "GENERIC"),
    ("HUSH_OPENMP", "intel", "gnu"),
    ("CT2_PACKED_GEMM", "maybe", "true"),
])
def test_an_unknown_fast_path_setting_stops_hushd_naming_the_valid_ones(
        tiny_daemon: Daemon, variable: str, value: str, valid: str) -> None:
    tiny_daemon.extra_env[variable] = value
    result = subprocess.run(tiny_daemon.command(), env=tiny_daemon.env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert f"{variable}={value!r}" in result.stderr and valid in result.stderr, result.stderr


def test_status_shows_the_fast_paths_in_force(tiny_daemon: Daemon) -> None:
    tiny_daemon.extra_env.update(CT2_FORCE_CPU_ISA="AVX2", CT2_PACKED_GEMM="0")
    tiny_daemon.start()
    status = json.loads(tiny_daemon.hush("status", "--json").stdout)
    assert status["fast_paths"]["isa"].startswith("AVX2 (forced")
    assert status["fast_paths"]["packed_gemm"].startswith("off")


def _answer(conn: RawConnection, line: bytes) -> dict[str, object]:
    conn.send(line + b"\n")
    while True:
        frame = conn.frame()
        if frame["type"] in {"done", "error"}:
            return frame


def test_hostile_numbers_and_ids_are_bad_requests_and_never_reach_the_log(
        tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    conn = RawConnection(tiny_daemon.socket)
    conn.hello()
    huge, long_ = b"9" * 5000, b"9" * 4000
    forged = "2026-01-01 00:00:00,000 INFO hushd: uid 0 rotated the key-encryption key"
    cases = [
        (b'{"id":"a","method":"status","params":{},"x":' + huge + b"}", "5000 digits"),
        (b'{"id":"b","method":"chat","params":{"message":"hi","options":'
         b'{"temperature":1.0,"seed":' + long_ + b"}}}", "4000 digits"),
        (b'{"id":"c","method":"chat","params":{"message":"hi","options":'
         b'{"seed":99999999999999999999}}}', "params.options.seed"),
        (b'{"id":"d","method":"chat","params":{"message":"hi","options":'
         b'{"top_k":9999999999}}}', "params.options.top_k"),
        (b'{"id":"e","method":"chat","params":{"message":"hi","options":'
         b'{"repetition_penalty":1e999}}}', "finite"),
        # A failing request logs its id: on its own line, this would read as the daemon's.
        (json.dumps({"id": "f\n" + forged, "method": "conversations.get",
                     "params": {"id": "nope"}}).encode(), "id: "),
        (json.dumps({"id": "g", "method": "cancel",
                     "params": {"request_id": "x\r" + forged}}).encode(), "printable"),
    ]
    for line, says in cases:
        frame = _answer(conn, line)
        assert frame["type"] == "error" and frame["code"] == "bad_request", (line[:60], frame)
        assert says in str(frame["message"]), frame
    frame = _answer(conn, b'{"id":"ok","method":"status","params":{}}')
    assert frame["type"] == "done"  # the same connection still serves
    log = tiny_daemon.log
    assert "Traceback" not in log and "99999999999999999999" not in log
    assert not any(line.startswith(forged) for line in log.splitlines())


def daemon_loggers() -> dict[str, str]:
    """Each daemon module that logs, and the name its `getLogger` call gives (as source)."""
    found = {}
    for path in sorted(DAEMON.rglob("*.py")):
        module = ".".join(path.relative_to(DAEMON).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "getLogger":
                found[module] = ast.unparse(node.args[0]) if node.args else "(root)"
    return found


def test_every_daemon_logger_is_hushd_dot_its_module() -> None:
    # One namespace: the journal reads `hushd.connection: ...`, and a new module's logger
    # is found by its path.
    loggers = daemon_loggers()
    assert "connection" in loggers and "summarize.inbox" in loggers
    wrong = {module: name for module, name in loggers.items() if name != repr(f"hushd.{module}")}
    assert not wrong, f"loggers not named hushd.<module>: {wrong}"


def test_log_lines_escape_what_they_quote(capsys: pytest.CaptureFixture[str]) -> None:
    names = [f"hushd.{module}" for module in daemon_loggers()]
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging("info")  # hushd's own set-up, as `hushd` runs it
        for name in names:  # the filter sits on the one handler every daemon logger reaches
            logging.getLogger(name).info(
                "request %s %s failed", "r1\n2026-01-01 00:00:00,000 INFO hushd: forged", "chat")
    finally:
        root.handlers[:], root.level = handlers, level
    err = capsys.readouterr().err
    assert err.count("\n") == len(names) and err.count("r1\\n2026-01-01") == len(names), err
