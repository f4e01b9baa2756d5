"""One client connection: peer check, hello, request dispatch and streamed answers."""

from __future__ import annotations

import array
import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import socket
import struct
import termios
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from . import __version__
from .chat import ChatTurn
from .documents import summarize
from .errors import Blocked, ErrorCode, HushError
from .policy.tools import dump_policy, render_test
from .protocol import (
    PROTOCOL_VERSION,
    CancelParams,
    ChatParams,
    ClientHello,
    ConversationParams,
    DaemonHello,
    DocumentPutParams,
    DoneEvent,
    ExportParams,
    FrameReader,
    ListParams,
    ModelUseParams,
    PolicyTestParams,
    ProtocolError,
    RenameParams,
    Request,
    RotateParams,
    SearchParams,
    SummarizeParams,
    UnlockParams,
    decode,
    describe_validation,
    encode,
    error_event,
    parse_request,
)
from .store import Store

if TYPE_CHECKING:
    from .server import Server

log = logging.getLogger("hushd.connection")


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    """Supplementary groups (SO_PEERGROUPS), so membership in the socket's group counts."""


SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    try:
        # 1024 bytes (256 groups) is the most Python lets getsockopt read.
        raw_groups = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 1024)
        groups = struct.unpack(f"{len(raw_groups) // 4}I", raw_groups)
    except OSError:  # kernels before 4.13: the primary group is all we know
        groups = ()
    return Peer(pid, uid, gid, tuple(groups))


class ReadWatch:
    """Tells a client that reads nothing from one that reads slowly, at any output rate.

    Unread output sits in two places: hushd's transport buffer (payload bytes) and the kernel's
    socket buffer, whose SIOCOUTQ for a Unix socket is the memory of the chunks the peer has
    not read (skb truesize: 768 for a 43-byte token frame, so 64 KiB of SO_SNDBUF, doubled by
    the kernel, holds 171 frames, 17 s of one sequence at 10 tok/s). Neither amount going up
    says anything: at a few frames a second both grow for minutes whether the client reads or
    not. What only a read can do is make SIOCOUTQ go down (a chunk read to its end), or let
    the transport hand the kernel more of its buffer (the kernel takes more only once the peer
    has freed room). So it looks before and after each write of ours, and between two looks
    only the peer can move either amount. A look is one ioctl (about 1 us).
    """

    def __init__(self, transport: asyncio.WriteTransport, sock: socket.socket) -> None:
        self.transport = transport
        self.sock = sock
        self.written = 0  # payload bytes handed to the transport
        self.last_read = time.monotonic()
        """When the client last had nothing unread, or was last seen taking some."""
        self._unread_kernel = 0
        self._flushed = 0

    def _look(self) -> tuple[int, int]:
        outq = array.array("i", [0])
        fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, outq)
        return outq[0], self.written - self.transport.get_write_buffer_size()

    def stalled(self) -> float:
        """Seconds the client has had output waiting without reading any of it."""
        unread_kernel, flushed = self._look()
        if ((unread_kernel == 0 and flushed == self.written)
                or unread_kernel < self._unread_kernel or flushed > self._flushed):
            self.last_read = time.monotonic()
        self._unread_kernel, self._flushed = unread_kernel, flushed
        return time.monotonic() - self.last_read

    def wrote(self, size: int) -> None:
        """Record a write of ours, so that it is not mistaken for, or hide, a read."""
        self.written += size
        self._unread_kernel, self._flushed = self._look()


def is_service_owner(uid: int) -> bool:
    """Root, or the uid hushd runs as: the user, or the service user under systemd."""
    return uid in (0, os.getuid())


class Connection:
    def __init__(
        self,
        server: Server,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: Peer,
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.peer = peer
        self.tag = uuid.uuid4().hex[:8]
        self.greeted = False
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.cancels: dict[str, threading.Event] = {}
        limits = server.settings.limits
        self.frames = FrameReader(limits.max_frame_bytes)
        self.uploads = server.documents.uploads(peer.uid)
        self.connected = time.monotonic()
        self.dropped = False
        # Unsent output is bounded twice over: the kernel's socket buffer, and ours, past which
        # drain() waits; `watch_reads` cuts off a client that takes none of it for
        # send_timeout_s, however slowly it comes.
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limits.max_unsent_bytes)
        writer.transport.set_write_buffer_limits(high=limits.max_unsent_bytes)
        self.reads = ReadWatch(writer.transport, sock)

    # --- sending ---

    async def send(self, frame: object) -> None:
        if self.writer.is_closing():
            raise ConnectionResetError("client went away")
        data = encode(frame)
        self.reads.stalled()  # a read since the last look counts before this write hides it
        self.writer.write(data)
        self.reads.wrote(len(data))
        await self.writer.drain()  # a client that never frees room is cut off by watch_reads

    async def watch_reads(self) -> None:
        """Cut the connection off once its client has read nothing for send_timeout_s."""
        timeout = self.server.settings.limits.send_timeout_s
        while not self.writer.is_closing():
            await asyncio.sleep(min(1.0, timeout / 4))
            if self.writer.is_closing():
                return
            if self.reads.stalled() >= timeout:
                self.drop_slow_reader(timeout)

    def drop_slow_reader(self, waited: float) -> None:
        """Cancel the requests of a client that stopped reading, and cut it off."""
        if self.dropped:
            return
        self.dropped = True
        log.warning("connection %s: the client read nothing for %g s; cancelling its %d "
                    "requests and closing it (%d bytes were waiting to be sent)", self.tag,
                    waited, len(self.tasks), self.writer.transport.get_write_buffer_size())
        for event in self.cancels.values():
            event.set()
        # Nothing more can reach this client: drop what is queued with the socket.
        self.writer.transport.abort()

    async def send_error(self, request_id: str | None, code: ErrorCode, message: str) -> None:
        with contextlib.suppress(ConnectionError):
            await self.send(error_event(request_id, code, message))

    # --- main loop ---

    async def run(self) -> None:
        limits = self.server.settings.limits
        watch = asyncio.create_task(self.watch_reads())
        try:
            while not self.server.stopping:
                timeout = None if self.tasks else limits.idle_timeout_s
                if not self.greeted:  # a deadline from connecting, however slowly bytes come
                    timeout = max(0.0, self.connected + limits.hello_timeout_s - time.monotonic())
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), timeout)
                except TimeoutError:
                    if not self.greeted:
                        await self.send_error(None, "hello_timeout",
                                              "closing a connection that sent no hello within "
                                              f"{limits.hello_timeout_s:g} s of connecting")
                    else:
                        await self.send_error(None, "idle_timeout",
                                              f"closing a connection idle for {timeout:g} s")
                    break
                if not data:
                    break
                for item in self.frames.feed(data):
                    if isinstance(item, ProtocolError):
                        await self.send_error(None, item.code, item.message)
                    else:
                        await self.handle_frame(item)
        except ConnectionError:
            pass
        finally:
            watch.cancel()
            await self.close(limits.send_timeout_s)
            await asyncio.wait([watch])

    async def close(self, flush_timeout: float) -> None:
        """Cancel what is in flight and close; output the client has not taken within
        `flush_timeout` seconds is dropped with the socket."""
        # A client that vanished mid-stream must not keep the model busy.
        for event in self.cancels.values():
            event.set()
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.uploads.clear()
        self.writer.close()
        try:
            # Shielded: a timeout must not cancel the close future another waiter shares.
            await asyncio.wait_for(asyncio.shield(self.writer.wait_closed()), flush_timeout)
        except TimeoutError:
            self.writer.transport.abort()
        except ConnectionError:
            pass

    async def handle_frame(self, line: bytes) -> None:
        limits = self.server.settings.limits
        request_id: str | None = None
        try:
            frame = decode(line, max_depth=limits.max_depth)
            raw_id = frame.get("id")
            request_id = raw_id if isinstance(raw_id, str) else None
            if not self.greeted:
                await self.handle_hello(frame)
                return
            request, params = parse_request(frame)
            if self.server.stopping and request.method != "cancel":
                raise ProtocolError("the daemon is shutting down; try again when it is back",
                                    code="shutting_down")
            if request.id in self.tasks:
                raise ProtocolError(f"request id {request.id!r} is already in flight",
                                    code="duplicate_id")
            if request.method == "cancel":
                assert isinstance(params, CancelParams)
                await self.cancel(request.id, params.request_id)
                return
            if len(self.tasks) >= limits.max_inflight:
                raise ProtocolError(
                    f"too many requests in flight on this connection (limit "
                    f"{limits.max_inflight}); wait for one to finish",
                    code="too_many_requests",
                )
            self.start(request, params)
        except HushError as exc:
            await self.send_error(request_id, exc.code, exc.message)

    async def handle_hello(self, frame: dict[str, Any]) -> None:
        if frame.get("type") != "hello":
            raise ProtocolError('the first frame must be {"type": "hello", "protocol": 1}',
                                code="no_hello")
        try:
            hello = ClientHello.model_validate(frame)
        except ValidationError as exc:
            raise ProtocolError(describe_validation(exc), code="no_hello") from None
        if hello.protocol != PROTOCOL_VERSION:
            raise ProtocolError(
                f"this daemon speaks protocol {PROTOCOL_VERSION}, the client {hello.protocol}; "
                "upgrade the older of the two",
                code="protocol_version",
            )
        limits = self.server.settings.limits
        answer: DaemonHello = {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "daemon": __version__,
            "model": self.server.models.name,
            "limits": {
                "max_frame_bytes": limits.max_frame_bytes,
                "max_depth": limits.max_depth,
                "max_inflight": limits.max_inflight,
            },
        }
        self.greeted = True
        await self.send(answer)

    # --- requests ---

    def start(self, request: Request, params: object) -> None:
        handlers: dict[str, Callable[[str, Any], Awaitable[None]]] = {
            "chat": self.chat,
            "status": self.status,
            "models.list": self.models_list,
            "models.use": self.models_use,
            "conversations.list": self.conversations_list,
            "conversations.get": self.conversations_get,
            "conversations.rename": self.conversations_rename,
            "conversations.delete": self.conversations_delete,
            "conversations.search": self.conversations_search,
            "conversations.export": self.conversations_export,
            "unlock": self.unlock,
            "policy.show": self.policy_show,
            "policy.test": self.policy_test,
            "document.put": self.document_put,
            "summarize": self.summarize,
            "keys.rotate": self.keys_rotate,
        }
        handler = handlers[request.method]
        task = asyncio.create_task(self.run_request(request, handler, params))
        self.tasks[request.id] = task
        task.add_done_callback(functools.partial(self._forget, request.id))

    def _forget(self, request_id: str, _task: object) -> None:
        self.tasks.pop(request_id, None)

    async def run_request(
        self, request: Request, handler: Callable[[str, Any], Awaitable[None]], params: object
    ) -> None:
        started = time.monotonic()
        try:
            await handler(request.id, params)
        except HushError as exc:
            log.info("request %s %s failed: %s", request.id, request.method, exc.code)
            await self.send_error(request.id, exc.code, exc.message)
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("request %s %s crashed", request.id, request.method)
            await self.send_error(request.id, "internal",
                                  "the daemon hit an internal error; see its log")
        finally:
            log.debug("request %s %s took %.0f ms", request.id, request.method,
                      (time.monotonic() - started) * 1000)

    async def cancel(self, cancel_id: str, target: str) -> None:
        event = self.cancels.get(target)
        if event is None:
            raise ProtocolError(f"no request {target!r} is in flight on this connection",
                                code="not_found")
        event.set()
        done: DoneEvent = {"type": "done", "id": cancel_id, "result": {"cancelled": target}}
        await self.send(done)

    async def chat(self, request_id: str, params: ChatParams) -> None:
        cancel = threading.Event()
        self.cancels[request_id] = cancel
        try:
            turn = ChatTurn(self.server, self.peer.uid, request_id, params, self.send, cancel)
            done = await turn.run()
        finally:
            self.cancels.pop(request_id, None)
        await self.send(done)

    async def document_put(self, request_id: str, params: DocumentPutParams) -> None:
        limit = self.server.guard.for_uid(self.peer.uid).limits.max_document_bytes
        upload = self.uploads.put(params.document, data=params.data, filename=params.filename,
                                  media_type=params.media_type, last=params.last, limit=limit)
        await self.send_result(request_id, {"document": params.document,
                                            "received": upload.size,
                                            "complete": upload.complete})

    async def summarize(self, request_id: str, params: SummarizeParams) -> None:
        upload = self.uploads.take(params.document)
        cancel = threading.Event()
        self.cancels[request_id] = cancel
        try:
            result = await summarize(self.server, self.peer.uid, request_id, upload, params,
                                     self.send, cancel)
        finally:
            self.cancels.pop(request_id, None)
        await self.send_result(request_id, result)

    async def policy_show(self, request_id: str, _params: object) -> None:
        policy = self.server.guard.for_uid(self.peer.uid)
        await self.send_result(request_id, {**self.server.guard.describe(self.peer.uid),
                                            "yaml": dump_policy(policy)})

    async def policy_test(self, request_id: str, params: PolicyTestParams) -> None:
        policy = self.server.guard.for_uid(self.peer.uid)
        out, status = await self.server.guard.run(len(params.text), render_test, policy,
                                                  params.text, params.direction)
        await self.send_result(request_id, {"output": out, "exit_status": status,
                                            "version": policy.version})

    async def conversations_list(self, request_id: str, params: ListParams) -> None:
        items = await self.server.history.call(Store.list, self.peer.uid, limit=params.limit,
                                               offset=params.offset)
        total = await self.server.history.call(Store.count, self.peer.uid)
        await self.send_result(request_id, {"total": total,
                                            "conversations": [asdict(c) for c in items]})

    async def conversations_get(self, request_id: str, params: ConversationParams) -> None:
        conversation = await self.server.history.call(Store.get, self.peer.uid, params.id)
        result = asdict(conversation)
        result["failures"] = [f.message for f in conversation.failures]
        await self.send_result(request_id, result)

    async def conversations_rename(self, request_id: str, params: RenameParams) -> None:
        guard = self.server.guard
        title = await guard.storable(guard.for_uid(self.peer.uid), params.title,
                                     request_id=request_id, uid=self.peer.uid)
        await self.server.history.call(Store.rename, self.peer.uid, params.id, title)
        await self.send_result(request_id, {"id": params.id, "title": title})

    async def conversations_delete(self, request_id: str, params: ConversationParams) -> None:
        await self.server.history.call(Store.delete, self.peer.uid, params.id)
        log.info("uid %d deleted a conversation", self.peer.uid)
        await self.send_result(request_id, {"deleted": params.id})

    async def conversations_search(self, request_id: str, params: SearchParams) -> None:
        hits = await self.server.history.call(Store.search, self.peer.uid, params.query,
                                              limit=params.limit)
        await self.send_result(request_id, {"hits": [asdict(h) for h in hits]})

    async def conversations_export(self, request_id: str, params: ExportParams) -> None:
        text = await self.server.history.call(Store.export, self.peer.uid, params.id,
                                              params.format)
        policy = self.server.guard.for_uid(self.peer.uid)
        decision = await self.server.guard.apply(policy, "export", text)
        self.server.guard.record(decision.findings, request_id=request_id, policy=policy,
                                 uid=self.peer.uid)
        if decision.blocked:
            raise Blocked(decision.block_message or "the policy forbids exporting this")
        await self.send_result(request_id, {"format": params.format, "text": decision.text,
                                            "policy_version": policy.version})

    async def unlock(self, request_id: str, params: UnlockParams) -> None:
        await self.server.history.unlock(params.passphrase)
        log.info("uid %d unlocked the store", self.peer.uid)
        await self.send_result(request_id, {"unlocked": True})

    def require_owner(self, action: str) -> None:
        """Decisions that change the daemon for every user belong to the service owner."""
        if not is_service_owner(self.peer.uid):
            raise HushError(f"only root or the daemon's own user (uid {os.getuid()}) may "
                            f"{action}; ask its administrator", code="forbidden")

    async def keys_rotate(self, request_id: str, params: RotateParams) -> None:
        self.require_owner("rotate its keys")
        source = await self.server.history.rotate(params.passphrase)
        log.info("uid %d rotated the key-encryption key (%s)", self.peer.uid, source.kind)
        await self.send_result(request_id, {"key_source": str(source)})

    async def status(self, request_id: str, _params: object) -> None:
        await self.send_result(request_id, self.server.status())

    async def models_list(self, request_id: str, _params: object) -> None:
        models = await asyncio.to_thread(self.server.models.describe)
        await self.send_result(request_id, {"models": models})

    async def models_use(self, request_id: str, params: ModelUseParams) -> None:
        self.require_owner("switch the model it serves to everyone")
        info = await self.server.models.use(params.name)
        log.info("uid %d switched the model to %s", self.peer.uid, params.name)
        await self.send_result(request_id, {"model": params.name,
                                            "architecture": info.architecture})

    async def send_result(self, request_id: str, result: dict[str, Any]) -> None:
        done: DoneEvent = {"type": "done", "id": request_id, "result": result}
        await self.send(done)

