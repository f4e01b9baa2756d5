"""Hostile protocol frames against one tiny-model daemon.

Each case opens its own connection, sends what no client would, and holds when the daemon
answers with an error frame of a sensible code (docs/protocol.md), the same connection still
answers `status` afterwards (every error but the connection-level refusals keeps it open), the
daemon still lets a new client in, and the log it wrote meanwhile has no traceback, no forged
line and no raw control character.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from .harness import Hushd, Lab
from .verdicts import FORGED_PREFIX, Case, Check, log_problems, play
from .wire import Closed, Raw, status_once

HUGE = "9" * 5000
"""Past CPython's 4,300-digit limit for int(str): json.loads itself raises on it."""
SEED = "7" * 4000
"""Under that limit, so it parses, and far past any 64-bit seed."""
FORGED = f"x\n{FORGED_PREFIX} INFO hushd: REDTEAM-FORGED uid 0 rotated the keys"
SLOW_CHAT = {"message": "Tell me a long story.", "options": {"max_tokens": 4000}}


def frame(**fields: object) -> bytes:
    return json.dumps(fields, ensure_ascii=False).encode() + b"\n"


def request(request_id: object, method: object, params: object = None) -> bytes:
    return frame(id=request_id, method=method, params={} if params is None else params)


@dataclass(frozen=True)
class Probe:
    name: str
    send: bytes | Callable[[Raw], None]
    expect: frozenset[str]
    """Sensible error codes; "done" also accepts a normal answer."""
    greet: bool = True
    wait_s: float = 4.0


def _duplicate(raw: Raw) -> None:
    raw.send(request("dup", "chat", SLOW_CHAT) + request("dup", "chat", SLOW_CHAT))


def _too_many(raw: Raw) -> None:
    raw.send(b"".join(request(f"c{i}", "chat", SLOW_CHAT) for i in range(9)))


def _nan(raw: Raw) -> None:
    raw.send(b'{"id":"n","method":"chat","params":{"message":"hi","options":'
             b'{"temperature":NaN}}}\n')


def _in_flight_then(raw: Raw, payload: bytes) -> None:
    raw.send(request("slow", "chat", SLOW_CHAT) + payload)


PROBES: tuple[Probe, ...] = (
    Probe("malformed JSON", b'{"id": "a", "method": \n', frozenset({"bad_frame"})),
    Probe("JSON array, not an object", b"[1, 2, 3]\n", frozenset({"bad_frame"})),
    Probe("JSON string, not an object", b'"status"\n', frozenset({"bad_frame"})),
    Probe("invalid UTF-8", b'{"id": "\xff\xfe", "method": "status"}\n', frozenset({"bad_frame"})),
    Probe("byte-order mark before the frame", b"\xef\xbb\xbf" + request("b", "status"),
          frozenset({"bad_frame"})),
    Probe("empty object", b"{}\n", frozenset({"bad_request"})),
    Probe("blank lines only", b"\n \n\t\n", frozenset({"<silence>", "bad_frame"}), wait_s=1.5),
    Probe("2 MiB line", b'{"id":"big","method":"status","params":{"x":"' + b"A" * (2 << 20)
          + b'"}}\n', frozenset({"frame_too_large"})),
    Probe("16 MiB line, no newline until the end", b"B" * (16 << 20) + b"\n",
          frozenset({"frame_too_large"}), wait_s=8.0),
    Probe("5,000-digit integer in params",
          f'{{"id":"h1","method":"status","params":{{"n":{HUGE}}}}}\n'.encode(),
          frozenset({"bad_request", "bad_frame"})),
    Probe("5,000-digit integer as the id",
          f'{{"id":{HUGE},"method":"status","params":{{}}}}\n'.encode(),
          frozenset({"bad_request", "bad_frame"})),
    Probe("5,000-digit integer as max_tokens",
          f'{{"id":"h3","method":"chat","params":{{"message":"hi","options":'
          f'{{"max_tokens":{HUGE}}}}}}}\n'.encode(), frozenset({"bad_request", "bad_frame"})),
    Probe("5,000-digit protocol version in the hello",
          f'{{"type":"hello","protocol":{HUGE}}}\n'.encode(),
          frozenset({"no_hello", "protocol_version", "bad_request", "bad_frame"}), greet=False),
    Probe("4,000-digit seed",
          f'{{"id":"s","method":"chat","params":{{"message":"hi","options":'
          f'{{"temperature":0.7,"seed":{SEED},"max_tokens":4}}}}}}\n'.encode(),
          frozenset({"bad_request"})),
    Probe("1e999999 temperature (infinity)",
          b'{"id":"t","method":"chat","params":{"message":"hi","options":'
          b'{"temperature":1e999999}}}\n', frozenset({"bad_request"})),
    Probe("NaN temperature", _nan, frozenset({"bad_request"})),
    Probe("request id with a newline (forged log line)",
          request(FORGED, "conversations.get", {"id": "nosuchconversation"}),
          frozenset({"bad_request"})),
    Probe("request id with control characters",
          request("a\x1b[2J\r\x00\x07b", "conversations.get", {"id": "nosuchconversation"}),
          frozenset({"bad_request"})),
    Probe("request id with a lone surrogate",
          b'{"id":"a\\ud800","method":"conversations.get","params":{"id":"nosuch"}}\n',
          frozenset({"bad_request"})),
    Probe("129-character request id", request("i" * 129, "status"), frozenset({"bad_request"})),
    Probe("request id of the wrong type", request(7, "status"), frozenset({"bad_request"})),
    Probe("unknown method", request("u", "system.exec", {"cmd": "id"}),
          frozenset({"unknown_method"})),
    Probe("method missing", frame(id="m", params={}), frozenset({"bad_request"})),
    Probe("params as a list", request("p", "status", [1, 2]), frozenset({"bad_request"})),
    Probe("unknown params field", request("f", "chat", {"message": "hi", "sudo": True}),
          frozenset({"bad_request"})),
    Probe("wrong type for max_tokens",
          request("w", "chat", {"message": "hi", "options": {"max_tokens": "many"}}),
          frozenset({"bad_request"})),
    Probe("negative max_tokens",
          request("w2", "chat", {"message": "hi", "options": {"max_tokens": -1}}),
          frozenset({"bad_request"})),
    Probe("nine stop strings",
          request("w3", "chat", {"message": "hi", "options": {"stop": ["x"] * 9}}),
          frozenset({"bad_request"})),
    Probe("lone surrogate in a chat message",
          b'{"id":"ls","method":"chat","params":{"message":"hi \\udc80 there",'
          b'"options":{"max_tokens":4}}}\n', frozenset({"bad_request", "done"})),
    Probe("100,000 nested arrays", b"[" * 100_000 + b"]" * 100_000 + b"\n",
          frozenset({"too_deep", "bad_frame"})),
    Probe("40 nested objects",
          b'{"id":"d","method":"status","params":' + b'{"a":' * 40 + b"1" + b"}" * 40
          + b"}\n", frozenset({"too_deep"})),
    Probe("request before the hello", request("early", "status"), frozenset({"no_hello"}),
          greet=False),
    Probe("hello with protocol 2", frame(type="hello", protocol=2),
          frozenset({"protocol_version"}), greet=False),
    Probe("second hello", frame(type="hello", protocol=1), frozenset({"bad_request"})),
    Probe("duplicate request id in flight", _duplicate, frozenset({"duplicate_id"})),
    Probe("nine requests in flight (limit 8)", _too_many, frozenset({"too_many_requests"})),
    Probe("cancel of an unknown id", request("k", "cancel", {"request_id": "never-sent"}),
          frozenset({"not_found"})),
    Probe("cancel while a chat runs, of another id",
          lambda raw: _in_flight_then(raw, request("k2", "cancel", {"request_id": "nope"})),
          frozenset({"not_found"})),
    Probe("oversized upload part",
          request("up", "document.put", {"document": "d1", "filename": "a.txt",
                                         "data": "QUFB" * 200_000}),
          frozenset({"bad_request"})),
    Probe("upload part that is not base64",
          request("up2", "document.put", {"document": "d2", "filename": "a.txt",
                                          "data": "not base64 at all!"}),
          frozenset({"bad_request"})),
    Probe("summarize of a document never sent", request("sm", "summarize", {"document": "x"}),
          frozenset({"not_found"})),
    Probe("conversation id with a path", request("cp", "conversations.get",
                                                 {"id": "../../etc/passwd"}),
          frozenset({"bad_request"})),
    Probe("model name with a path", request("mu", "models.use", {"name": "../../../etc"}),
          frozenset({"bad_request"})),
)


HELPERS = frozenset({"slow", "dup", *(f"c{i}" for i in range(9))})
"""Requests a probe starts only to have something in flight; their answers do not count."""


def _codes(raw: Raw, wait_s: float) -> list[str]:
    """The first answer that counts within `wait_s`: an error code, "done", or "<closed>"."""
    end = time.monotonic() + wait_s
    while (left := end - time.monotonic()) > 0:
        try:
            got = raw.frame(left)
        except TimeoutError:
            break
        except Closed:
            return ["<closed>"]
        if got.get("type") == "error":
            return [str(got.get("code"))]
        if got.get("type") == "done" and got.get("id") not in HELPERS:
            return ["done"]
    return []


def _survives(raw: Raw, greeted: bool) -> bool:
    if raw.closed:
        return False
    if not greeted and raw.hello(5.0).get("type") != "hello":
        return False
    # Stop what a probe left running, so the next probe meets an idle daemon.
    for request_id in sorted(HELPERS):
        raw.request("cancel", {"request_id": request_id})
    end = time.monotonic() + 10.0
    while time.monotonic() < end:
        answer = raw.call("status", timeout=max(0.1, end - time.monotonic()))
        if answer.get("code") != "too_many_requests":  # cancelled chats still winding down
            return answer.get("type") == "done"
        time.sleep(0.2)
    return False


def _probe(daemon: Hushd, probe: Probe) -> Callable[[Check], None]:
    def run(check: Check) -> None:
        daemon.ensure()
        mark = daemon.log_mark()
        raw = Raw(daemon.socket, timeout=10.0)
        try:
            if probe.greet and raw.hello().get("type") != "hello":
                check.fail("no hello from the daemon")
                return
            if callable(probe.send):
                probe.send(raw)
            else:
                raw.send(probe.send)
            codes = _codes(raw, probe.wait_s) or ["<silence>"]
            check.figures["codes"] = codes
            wanted = [c for c in codes if c in probe.expect]
            if wanted:
                check.note(f"answered {wanted[0]}")
            else:
                check.fail("answered " + ", ".join(dict.fromkeys(codes))
                           + f" (expected {' or '.join(sorted(probe.expect))})")
            check.require(_survives(raw, probe.greet), "the connection did not survive")
        finally:
            raw.close()
        check.require(status_once(daemon.socket, 10.0)[0] is not None,
                      "the daemon no longer answers a new client")
        for problem in log_problems(daemon.log_since(mark)):
            check.fail(problem)

    return run


def run(lab: Lab) -> list[Case]:
    daemon = lab.daemon("protocol")
    daemon.start()
    try:
        return [play("protocol", probe.name, _probe(daemon, probe), budget_s=60)
                for probe in PROBES]
    finally:
        daemon.stop()
