"""hushd's lifecycle: load the model, listen, serve, and stop in order on SIGTERM.

Signal handlers only set a flag (`should_exit`); `serve()` notices it, stops accepting, lets
in-flight generations finish within the grace period, cancels what is left, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from . import __version__, paths, systemd
from .config import Settings
from .connection import Connection, Peer, is_service_owner, peer_credentials
from .documents import Documents, summarize_for_inbox
from .engine import fast_paths
from .engine.generator import Engine
from .engine.openmp import openmp_runtime
from .engine.probe import recorded_choice, workers_for
from .errors import HushError
from .guard import Guard
from .history import History
from .memory import limit_heap_growth
from .models import ModelHolder
from .policy import Pseudonyms
from .protocol import ErrorEvent, encode, error_event
from .scheduler import Scheduler
from .store import Store
from .summarize.inbox import Inbox
from .tasks import Tasks, own_task

log = logging.getLogger("hushd.server")

RETENTION_INTERVAL_S = 3600.0
# After the grace period: how long cancelled requests get to send their `done`, then how long
# each client gets to take what is still queued for it, before its socket is dropped.
CANCEL_WAIT_S = 2.0
CLOSE_FLUSH_S = 1.0

# Settings bound to resources made once at start (sockets, directories, threads).
_RESTART_ONLY = ("socket", "socket_mode", "socket_group", "state_dir", "config_dir",
                 "key_file", "cache_dir", "policy_dir", "model", "intra_threads",
                 "decode_workers", "max_batch", "lazy_load", "inbox_dir", "outbox_dir")


def prepare_socket_path(path: Path, *, shared_with_group: bool = False) -> None:
    """Check the parent is ours and private (0700 if we make it); clear a stale socket."""
    paths.private_dir(path.parent, create=True, group_may_enter=shared_with_group)
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


def resolve_groups(names: tuple[str, ...]) -> set[int]:
    gids = set()
    for name in names:
        try:
            gids.add(grp.getgrnam(name).gr_gid)
        except KeyError:
            raise HushError(f"allow_groups names {name!r}, which is not a group on this "
                            "system; create it or remove it from the settings",
                            code="config") from None
    return gids


def bind_socket(settings: Settings) -> socket.socket:
    path = settings.socket
    if len(os.fsencode(path)) > 107:
        raise HushError(f"socket path {path} is longer than the 107 bytes Unix allows; "
                        "choose a shorter --socket", code="socket")
    prepare_socket_path(path, shared_with_group=settings.socket_group is not None)
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
    def __init__(self, settings: Settings, models: ModelHolder, guard: Guard, *, workers: int,
                 threads_from: str = "default",
                 reload_settings: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self.threads_from = threads_from
        self.reload_settings = reload_settings
        self.reload_requested = asyncio.Event()
        self.history = History(settings.state_dir,
                               settings.key_file or settings.config_dir / "hush.key")
        self.guard = guard
        self.inbox: Inbox | None = None
        self.documents = Documents()
        # Placeholders of each conversation, so a pseudonym stays the same across its turns.
        self.pseudonyms: dict[str, Pseudonyms] = {}
        self.allowed_group_ids = resolve_groups(settings.allow_groups)
        self.models = models
        self.scheduler = Scheduler(models, max_queued=settings.limits.max_queued,
                                   workers=workers, max_batch=settings.max_batch)
        self.should_exit = asyncio.Event()
        self.stopping = False
        self.connections: set[Connection] = set()
        self.tasks: Tasks = set()
        self.started = time.monotonic()
        self.own_socket = False

    def status(self) -> dict[str, Any]:
        return {
            "daemon": __version__,
            "pid": os.getpid(),
            "model": self.models.name,
            "model_loaded": self.models.loaded,
            "store": "locked" if self.history.locked else "open",
            "key_source": str(source) if (source := self.history.key_source) else None,
            "policy": self.guard.describe(os.getuid()),
            "uptime_s": round(time.monotonic() - self.started, 1),
            "connections": len(self.connections),
            "generating": self.scheduler.active,
            "queued": self.scheduler.waiting,
            "intra_threads": engine.intra_threads if (engine := self.models.engine) else None,
            "decode_workers": self.scheduler.worker_count,
            "threads_from": self.threads_from,
            "openmp": openmp_runtime(),
            "fast_paths": fast_paths.describe(),
            "inbox": self.inbox.describe() if self.inbox is not None else None,
        }

    def allowed(self, peer: Peer) -> bool:
        if peer.uid == os.getuid() or peer.uid in self.settings.allow_uids:
            return True
        allowed_gids = set(self.settings.allow_gids) | self.allowed_group_ids
        return bool(allowed_gids & {peer.gid, *peer.groups})

    def connection_refusal(self, peer: Peer) -> ErrorEvent | None:
        """Refuse past the limits: in all, per uid, and the room kept for the service owner."""
        limits = self.settings.limits
        total = len(self.connections)
        if total >= limits.max_connections:
            return error_event(None, "too_many_connections",
                               f"the daemon already serves {total} connections; try again "
                               "shortly")
        if is_service_owner(peer.uid):
            return None
        others = sum(not is_service_owner(c.peer.uid) for c in self.connections)
        if others >= limits.room_for_others:
            return error_event(None, "too_many_connections",
                               f"the daemon already serves {others} connections of other "
                               "users, all it takes besides its owner's; try again shortly")
        mine = sum(c.peer.uid == peer.uid for c in self.connections)
        if mine >= limits.max_connections_per_uid:
            return error_event(None, "too_many_connections",
                               f"uid {peer.uid} already has {mine} connections open, the most "
                               "one user may; close one and try again")
        return None

    async def on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock: socket.socket = writer.get_extra_info("socket")
        peer = peer_credentials(sock)
        refusal = None
        if not self.allowed(peer):
            log.warning("refused connection from uid %d (pid %d): not allowed", peer.uid,
                        peer.pid)
            refusal = error_event(None, "forbidden",
                                  f"uid {peer.uid} may not use this daemon; ask its "
                                  "administrator to add you to allow_uids or the socket group")
        elif self.stopping:
            refusal = error_event(None, "shutting_down", "the daemon is shutting down")
        else:
            refusal = self.connection_refusal(peer)
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
        loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)

    async def reload_on_sighup(self) -> None:
        """Build new settings from the config file; swap them in only if they validate."""
        while True:
            await self.reload_requested.wait()
            self.reload_requested.clear()
            if self.reload_settings is None:
                continue
            try:
                fresh = await asyncio.to_thread(self.reload_settings)
                gids = resolve_groups(fresh.allow_groups)
            except HushError as exc:
                log.error("reload failed, keeping the running settings: %s", exc.message)
                systemd.notify(f"STATUS=reload failed: {exc.message}")
                continue
            fixed = [k for k in _RESTART_ONLY if getattr(fresh, k) != getattr(self.settings, k)]
            if fixed:
                log.warning("these settings change only on restart: %s", ", ".join(fixed))
                fresh = fresh.model_copy(update={k: getattr(self.settings, k) for k in fixed})
            self.settings = fresh
            self.allowed_group_ids = gids
            self.scheduler.max_queued = fresh.limits.max_queued
            self.models.keep_alive_s = fresh.keep_alive_s
            await self.guard.reload()
            log.info("reloaded settings")
            systemd.notify(f"STATUS=serving {self.models.name}")

    def start_inbox(self) -> None:
        inbox = self.settings.inbox_dir
        if inbox is None:
            return
        outbox = self.settings.outbox_dir or inbox / "summaries"
        limit = self.guard.for_uid(os.getuid()).limits.max_document_bytes
        self.inbox = Inbox(inbox, outbox, summarize_for_inbox(self, asyncio.get_running_loop()),
                           max_bytes=limit)
        self.inbox.start()

    async def apply_retention(self) -> None:
        """The policy's retention, at start and then hourly (a store that is locked waits)."""
        while True:
            retention = self.guard.current.for_uid(None).retention
            if not self.history.locked and (retention.max_age_days or
                                            retention.max_conversations):
                max_age = retention.max_age_days * 86400 if retention.max_age_days else None
                deleted = await self.history.call(Store.apply_retention, max_age_s=max_age,
                                                  max_conversations=retention.max_conversations)
                if deleted:
                    log.info("retention deleted %d conversations", deleted)
            await asyncio.sleep(RETENTION_INTERVAL_S)

    async def watchdog(self, interval: float) -> None:
        # Pinging from the loop itself proves the loop is alive, which a thread would not.
        while True:
            systemd.notify("WATCHDOG=1")
            await asyncio.sleep(interval)

    def own_task(self, coro: Coroutine[Any, Any, None]) -> None:
        own_task(self.tasks, coro, name=getattr(coro, "__qualname__", None))

    async def serve(self) -> None:
        self.install_signal_handlers()
        self.guard.start()
        await self.history.open()
        if not self.settings.lazy_load:
            # READY=1 means "can answer now": load before announcing it.
            self.models.release(await self.models.acquire())
        self.scheduler.start()
        self.start_inbox()
        self.own_task(self.models.unload_when_idle())
        self.own_task(self.reload_on_sighup())
        self.own_task(self.apply_retention())
        sock = systemd.listen_socket()
        if sock is None:
            sock = bind_socket(self.settings)
            self.own_socket = True
            where = str(self.settings.socket)
        else:
            where = "socket from systemd"
        limit = self.settings.limits.max_frame_bytes + 1
        server = await asyncio.start_unix_server(self.on_connect, sock=sock, limit=limit)
        log.info("hushd %s ready on %s with model %s", __version__, where, self.models.name)
        systemd.notify("READY=1", f"STATUS=serving {self.models.name}")
        if (interval := systemd.watchdog_interval()) is not None:
            self.own_task(self.watchdog(interval))
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
        if self.inbox is not None:  # its summary under way stops now, and is redone next start
            await asyncio.to_thread(self.inbox.stop)
        inflight = [t for c in self.connections for t in c.tasks.values()]
        if inflight:
            _done, pending = await asyncio.wait(inflight, timeout=self.settings.shutdown_grace_s)
            if pending:
                log.warning("cancelling %d requests still running after %.1f s", len(pending),
                            self.settings.shutdown_grace_s)
                # Stop the model at its next step; each request still sends its `done`
                # (finish_reason "cancelled") so clients know where their answer ended.
                for connection in self.connections:
                    for event in connection.cancels.values():
                        event.set()
                await asyncio.wait(pending, timeout=CANCEL_WAIT_S)
        # A client that reads nothing must not hold the exit: grace means grace.
        await asyncio.gather(*(c.close(CLOSE_FLUSH_S) for c in list(self.connections)))
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.scheduler.close()
        await self.history.close()
        await self.guard.stop()
        log.info("stopped")


def run(settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> None:
    """Load the model, then serve until SIGTERM/SIGINT; SIGHUP calls `reload_settings`."""
    limit_heap_growth()

    def intra_threads(path: Path) -> int:
        recorded = recorded_choice(path)
        return settings.intra_threads or (recorded.intra_threads if recorded else 1)

    models = ModelHolder(settings.models_dir, settings.model, keep_alive_s=settings.keep_alive_s,
                         loader=lambda path: Engine.load(
                             path, intra_threads=intra_threads(path), inter_threads=workers))
    # Fail before binding anything when the model is missing, with the command that fixes it.
    first = models.path_of(settings.model)
    workers = settings.decode_workers or workers_for(intra_threads(first))
    if settings.intra_threads or settings.decode_workers:
        threads_from = "hushd.yaml"
    elif (recorded := recorded_choice(first)) is not None:
        threads_from = "probe"
        if recorded.openmp != openmp_runtime():
            threads_from += (f", measured on the {recorded.openmp} OpenMP runtime, not on "
                             f"{openmp_runtime()} (run `hush model probe {settings.model}` to "
                             "measure again)")
    else:
        threads_from = f"default (run `hush model probe {settings.model}` to measure)"
    guard = Guard(settings.policy_dir or settings.config_dir / "policies",
                  settings.state_dir / "audit.jsonl")
    try:
        asyncio.run(Server(settings, models, guard, workers=workers, threads_from=threads_from,
                           reload_settings=reload_settings).serve())
    finally:
        models.close()
