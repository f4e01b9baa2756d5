"""Async client for hushd, used by the `hush` UI and command line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import pwd
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeGuard, cast

from . import __version__, paths
from .errors import DaemonUnavailable, HushError
from .protocol import PROTOCOL_VERSION, DaemonHello, ErrorEvent, Event, encode

# The daemon's frames are bounded by its own limit; tokens are small, results can be larger.
_READ_LIMIT = 16 * 1024 * 1024

# The account the system service runs as (systemd/hush.sysusers, hushd.service's User=).
SERVICE_USER = "hush"


def trusted_daemon_uids() -> set[int]:
    """Whom a client may send its words to: itself, root, and the service user if it exists."""
    uids = {os.getuid(), 0}
    with contextlib.suppress(KeyError):
        uids.add(pwd.getpwnam(SERVICE_USER).pw_uid)
    return uids


def check_daemon_peer(sock: socket.socket, path: Path) -> None:
    """Refuse a listener run by anyone else, as ssh checks the host before sending a secret."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    if uid not in trusted_daemon_uids():
        raise HushError(
            f"the process listening on {path} (pid {pid}) runs as uid {uid}, which is neither "
            f"you, root nor the {SERVICE_USER!r} service user: it may be posing as hushd, so "
            "nothing was sent. Find out who made that socket (`ls -l`), or point --socket / "
            "HUSH_SOCKET at your daemon's socket", code="untrusted_daemon")


def _unavailable(path: Path, why: str) -> DaemonUnavailable:
    return DaemonUnavailable(
        f"hushd is not running on {path} ({why}); start it with `hushd` or `make run`, "
        "or point --socket / HUSH_SOCKET at the right socket"
    )


def _is_frame(value: object) -> TypeGuard[dict[str, Any]]:
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        return False
    return value["type"] != "error" or (isinstance(value.get("code"), str)
                                        and isinstance(value.get("message"), str))


class RequestFailed(HushError):
    """The daemon answered a request with an `error` event."""


class Client:
    def __init__(self, path: Path, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.path = path
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Queue[Event | BaseException]] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self.hello: DaemonHello | None = None

    @classmethod
    async def connect(cls, path: Path, *, timeout: float = 10.0) -> Client:  # noqa: ASYNC109
        paths.check_client_socket_dir(path)
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=_READ_LIMIT), timeout
            )
        except FileNotFoundError:
            raise _unavailable(path, "no socket") from None
        except ConnectionRefusedError:
            raise _unavailable(path, "connection refused") from None
        except PermissionError:
            raise DaemonUnavailable(f"permission denied on {path}: you are not allowed to use "
                                    "this daemon's socket", code="forbidden") from None
        except TimeoutError:
            raise _unavailable(path, f"no answer within {timeout:g} s") from None
        client = cls(path, reader, writer)
        try:
            check_daemon_peer(writer.get_extra_info("socket"), path)  # before a single byte
            await asyncio.wait_for(client._handshake(), timeout)
        except TimeoutError:
            await client.close()
            raise DaemonUnavailable(f"the daemon on {path} accepted the connection but did not "
                                    f"say hello within {timeout:g} s; is it stuck? Its log may "
                                    "say why") from None
        except BaseException:
            await client.close()
            raise
        client._reader_task = asyncio.create_task(client._read_loop())
        return client

    async def reconnect(self, *, timeout: float = 30.0) -> None:  # noqa: ASYNC109
        """Connect again after the daemon went away, backing off between attempts."""
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.1
        await self.close()
        while True:
            try:
                fresh = await Client.connect(self.path, timeout=timeout)
            except DaemonUnavailable:
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._reader, self._writer = fresh._reader, fresh._writer
            self._reader_task, self.hello = fresh._reader_task, fresh.hello
            self._pending = fresh._pending
            return

    async def _handshake(self) -> None:
        self._writer.write(encode({"type": "hello", "protocol": PROTOCOL_VERSION,
                                   "client": f"hush/{__version__}"}))
        with contextlib.suppress(ConnectionError):
            # A daemon that refuses us writes why and closes; read that rather than EPIPE.
            await self._writer.drain()
        try:
            frame = await self._read_frame()
        except ConnectionError:  # e.g. EPIPE: it closed before reading our hello
            frame = None
        if frame is None:
            raise DaemonUnavailable(f"the daemon on {self.path} closed the connection before "
                                    "saying hello; its log says why (or it is not hushd)")
        if frame.get("type") == "error":
            error = cast(ErrorEvent, frame)
            raise RequestFailed(error["message"], code=error["code"])
        if frame.get("type") != "hello" or frame.get("protocol") != PROTOCOL_VERSION:
            raise HushError(
                f"the daemon on {self.path} speaks protocol {frame.get('protocol')!r}, this "
                f"client {PROTOCOL_VERSION}; install matching versions of hush and hushd",
                code="protocol_version",
            )
        self.hello = cast(DaemonHello, frame)

    async def _read_frame(self) -> dict[str, Any] | None:
        try:
            line = await self._reader.readline()
            if not line:
                return None
            value = json.loads(line)
        except ValueError:  # not JSON, not UTF-8, or a line past the read limit
            value = None
        if not _is_frame(value):
            raise HushError(f"the daemon on {self.path} sent something that is not a Hush "
                            "frame; is hushd what listens there?", code="bad_frame")
        return value

    async def _read_loop(self) -> None:
        failure: BaseException
        try:
            while (frame := await self._read_frame()) is not None:
                request_id = frame.get("id")
                queue = self._pending.get(request_id) if isinstance(request_id, str) else None
                if queue is not None:
                    queue.put_nowait(cast(Event, frame))
                elif frame.get("type") == "error" and request_id is None:
                    # A connection-level error (idle timeout, shutdown): fail everyone waiting.
                    error = cast(ErrorEvent, frame)
                    for q in self._pending.values():
                        q.put_nowait(RequestFailed(error["message"], code=error["code"]))
            failure = DaemonUnavailable("the daemon closed the connection (did it stop?)")
        except ConnectionError as exc:
            failure = DaemonUnavailable(f"lost the connection to the daemon: {exc}")
        except HushError as exc:
            failure = exc
        for q in self._pending.values():
            q.put_nowait(failure)

    async def request(self, method: str, params: dict[str, Any] | None = None,
                      *, request_id: str | None = None) -> AsyncIterator[Event]:
        """Send a request and yield its events, ending with `done`; raise on `error`."""
        rid = request_id or f"r{next(self._ids)}"
        queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
        self._pending[rid] = queue
        try:
            self._writer.write(encode({"id": rid, "method": method, "params": params or {}}))
            await self._writer.drain()
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                if item["type"] == "error":
                    raise RequestFailed(item["message"], code=item["code"])
                yield item
                if item["type"] == "done":
                    return
        except ConnectionError as exc:
            raise DaemonUnavailable(f"lost the connection to the daemon: {exc}") from None
        finally:
            self._pending.pop(rid, None)

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """A request whose answer is a single `done` event with a result."""
        async for event in self.request(method, params):
            if event["type"] == "done":
                return event.get("result", {})
        raise HushError(f"{method}: the daemon ended the request without an answer")

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
