"""hushd's lifecycle: load the model, listen, serve, and stop in order on SIGTERM.

Signal handlers only set a flag (`should_exit`); `serve()` notices it, stops accepting, lets
in-flight generations finish within the grace period, cancels what is left, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

from . import __version__, systemd
from .config import Settings
from .connection import Connection, peer_credentials
from .engine.generator import Engine
from .errors import HushError
from .protocol import encode, error_event
from .scheduler import Scheduler

log = logging.getLogger("hushd")


def prepare_socket_path(path: Path) -> None:
    """Create the parent (0700 if we make it) and clear a stale socket left by a crash."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise HushError(f"{path} exists and is not a socket; remove it or choose another "
                        "--socket", code="socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        path.unlink(missing_ok=True)  # stale: nobody listens
        return
    finally:
        probe.close()
    raise HushError(f"another hushd is already listening on {path}; stop it first "
                    "or choose another --socket", code="socket")


def bind_socket(settings: Settings) -> socket.socket:
    path = settings.socket
    if len(os.fsencode(path)) > 107:
        raise HushError(f"socket path {path} is longer than the 107 bytes Unix allows; "
                        "choose a shorter --socket", code="socket")
    prepare_socket_path(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # never exists with wider permissions, not even briefly
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    if settings.socket_group is not None:
        try:
            gid = grp.getgrnam(settings.socket_group).gr_gid
        except KeyError:
            sock.close()
            raise HushError(f"socket_group {settings.socket_group!r} does not exist",
                            code="config") from None
        os.chown(path, -1, gid)
    os.chmod(path, settings.socket_mode)
    sock.listen(128)
    sock.setblocking(False)
    return sock


class Server:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.scheduler = Scheduler(engine, max_queued=settings.limits.max_queued,
                                   workers=settings.decode_workers,
                                   max_batch=settings.max_batch)
        self.should_exit = asyncio.Event()
        self.stopping = False
        self.connections: set[Connection] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.started = time.monotonic()
        self.own_socket = False

    def status(self) -> dict[str, Any]:
        return {
            "daemon": __version__,
            "pid": os.getpid(),
            "model": self.settings.model,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connections": len(self.connections),
            "generating": self.scheduler.active,
            "queued": self.scheduler.waiting,
            "threads": self.settings.intra_threads or 1,
        }

    def allowed(self, uid: int, gid: int) -> bool:
        return (
            uid == os.getuid()
            or uid in self.settings.allow_uids
            or gid in self.settings.allow_gids
        )

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        peer = peer_credentials(sock)
        refusal = None
        if not self.allowed(peer.uid, peer.gid):
            log.warning("refused connection from uid %d (pid %d): not allowed", peer.uid,
                        peer.pid)
            refusal = error_event(None, "forbidden",
                                  f"uid {peer.uid} may not use this daemon; ask its "
                                  "administrator to add you to allow_uids or the socket group")
        elif self.stopping:
            refusal = error_event(None, "shutting_down", "the daemon is shutting down")
        elif len(self.connections) >= self.settings.limits.max_connections:
            refusal = error_event(None, "too_many_connections",
                                  f"the daemon already serves {len(self.connections)} "
                                  "connections; try again shortly")
        if refusal is not None:
            with contextlib.suppress(ConnectionError):
                writer.write(encode(refusal))
                await writer.drain()
            writer.close()
            return
        connection = Connection(self, reader, writer, peer)
        self.connections.add(connection)
        log.info("connection %s from uid %d pid %d", connection.tag, peer.uid, peer.pid)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)
            log.info("connection %s closed", connection.tag)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.should_exit.set)

    async def watchdog(self, interval: float) -> None:
        # Pinging from the loop itself proves the loop is alive, which a thread would not.
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    async def serve(self) -> None:
        self.install_signal_handlers()
        self.scheduler.start()
        sock = systemd.listen_socket()
        if sock is None:
            sock = bind_socket(self.settings)
            self.own_socket = True
            where = str(self.settings.socket)
        else:
            where = "socket from systemd"
        limit = self.settings.limits.max_frame_bytes + 1
        server = await asyncio.start_unix_server(self.on_connect, sock=sock, limit=limit)
        log.info("hushd %s ready on %s with model %s", __version__, where, self.settings.model)
        systemd.notify("READY=1", f"STATUS=serving {self.settings.model}")
        if (interval := systemd.watchdog_interval()) is not None:
            task = asyncio.create_task(self.watchdog(interval))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        try:
            await self.should_exit.wait()
        finally:
            await self.shutdown(server)

    async def shutdown(self, server: asyncio.Server) -> None:
        self.stopping = True
        systemd.notify("STOPPING=1", "STATUS=stopping")
        log.info("stopping: no new connections; %d generating", self.scheduler.active)
        server.close()
        if self.own_socket:
            with contextlib.suppress(FileNotFoundError):
                self.settings.socket.unlink()
        inflight = [t for c in self.connections for t in c.tasks.values()]
        if inflight:
            _done, pending = await asyncio.wait(inflight, timeout=self.settings.shutdown_grace_s)
            if pending:
                log.warning("cancelling %d requests still running after %.0f s", len(pending),
                            self.settings.shutdown_grace_s)
        for connection in list(self.connections):
            await connection.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.scheduler.close()
        log.info("stopped")


def load_engine(settings: Settings) -> Engine:
    model_dir = settings.models_dir / settings.model
    if not model_dir.is_dir():
        raise HushError(
            f"model {settings.model!r} is not installed in {settings.models_dir}; "
            f"run `hush model pull {settings.model}` (or `hush model import FILE.gguf`) first",
            code="model_missing",
        )
    return Engine.load(model_dir, intra_threads=settings.intra_threads or 1,
                       inter_threads=settings.decode_workers)


def run(settings: Settings) -> None:
    """Load the model, then serve until SIGTERM/SIGINT."""
    try:
        engine = load_engine(settings)
    except OSError as exc:
        if exc.errno == errno.ENOMEM:
            raise HushError("not enough memory to load the model", code="model") from None
        raise
    try:
        asyncio.run(Server(settings, engine).serve())
    finally:
        engine.close()
