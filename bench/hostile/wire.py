"""Raw sockets that speak hushd's protocol and send what no client would, each call bounded
by a timeout; and `status` the way `hush status` asks it (connect, hello, status).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any


class Closed(Exception):
    """The daemon closed the connection."""


class Raw:
    """A bare Unix socket speaking newline-delimited JSON, with a timeout on every call."""

    def __init__(self, path: Path, *, timeout: float = 5.0, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError:
            self.sock.close()
            raise
        self.buffer = bytearray()
        self._scanned = 0
        self.ids = 0
        self.closed = False

    def send(self, data: bytes, timeout: float = 30.0) -> bool:
        """False when the daemon closed the connection (or stopped reading for `timeout`)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return False
        return True

    def request(self, method: str, params: dict[str, Any] | None = None, *,
                request_id: str | None = None) -> str:
        if request_id is None:
            self.ids += 1
            request_id = f"rt{self.ids}"
        frame = {"id": request_id, "method": method, "params": params or {}}
        self.send(json.dumps(frame).encode() + b"\n")
        return request_id

    def frame(self, timeout: float) -> dict[str, Any]:
        """The next frame; raises TimeoutError, or Closed when the daemon hung up."""
        end = time.monotonic() + timeout
        while (newline := self.buffer.find(b"\n", self._scanned)) < 0:
            self._scanned = len(self.buffer)
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                self.closed = True
                raise Closed
            self.buffer += chunk
        line = bytes(self.buffer[:newline])
        del self.buffer[:newline + 1]
        self._scanned = 0
        try:
            value = json.loads(line)
        except ValueError:
            return {"type": "<garbage>"}
        return value if isinstance(value, dict) else {"type": "<garbage>"}

    def terminal(self, request_id: str | None, timeout: float) -> dict[str, Any]:
        """The `done` or `error` for `request_id` (or a connection-level error); frames for
        other requests are skipped. {"type": "<timeout>"} or {"type": "<closed>"} otherwise."""
        end = time.monotonic() + timeout
        while True:
            try:
                frame = self.frame(max(0.0, end - time.monotonic()))
            except TimeoutError:
                return {"type": "<timeout>"}
            except Closed:
                return {"type": "<closed>"}
            if frame.get("type") in ("done", "error") and (
                    frame.get("id") == request_id or frame.get("id") is None):
                return frame

    def hello(self, timeout: float = 5.0) -> dict[str, Any]:
        self.send(b'{"type":"hello","protocol":1,"client":"redteam"}\n')
        try:
            return self.frame(timeout)
        except TimeoutError:
            return {"type": "<timeout>"}
        except Closed:
            return {"type": "<closed>"}

    def call(self, method: str, params: dict[str, Any] | None = None, *,
             timeout: float = 10.0) -> dict[str, Any]:
        return self.terminal(self.request(method, params), timeout)

    def close(self) -> None:
        self.sock.close()


def connect(path: Path, *, timeout: float = 5.0) -> Raw | None:
    """A greeted connection, or None when the daemon does not let one in."""
    try:
        raw = Raw(path, timeout=timeout)
    except OSError:
        return None
    if raw.hello(timeout).get("type") != "hello":
        raw.close()
        return None
    return raw


def status_once(path: Path, timeout: float = 5.0) -> tuple[float | None, dict[str, Any] | None]:
    """What `hush status` does (connect, hello, status): (milliseconds, result), or
    (None, None) when it did not answer within `timeout`."""
    started = time.monotonic()
    raw = connect(path, timeout=timeout)
    if raw is None:
        return None, None
    try:
        left = max(0.1, timeout - (time.monotonic() - started))
        frame = raw.call("status", timeout=left)
    finally:
        raw.close()
    if frame.get("type") != "done":
        return None, None
    return (time.monotonic() - started) * 1000, frame.get("result")
