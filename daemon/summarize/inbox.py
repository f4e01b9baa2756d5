"""A watched inbox: documents dropped into a directory are summarized into an outbox.

The directories come from the daemon's own configuration, never from a client. watchdog reports
changes on its observer thread; a single worker thread decides when a file is complete (its size
and modification time unchanged for `settle_seconds`, since writers give no "done" signal), reads
it, and writes `<name>.summary.md` (or `<name>.error.txt`) into the outbox with tmp + rename, so
a reader of the outbox never sees half a summary. Nothing raised while handling one file
escapes the worker: a bad file gets an error note, and the inbox keeps going.

The inbox may be a drop folder other users can write to; the outbox may not. It must belong to
the daemon's user and be writable by nobody else, or the inbox is refused (`problem`, shown by
`hush status`). It is opened once, without following a symlink, and every file in it is made
relative to that directory descriptor with O_CREAT|O_EXCL|O_NOFOLLOW under a random name, so
neither a symlink planted in it nor the directory being renamed or replaced afterwards can make
the daemon write anywhere else. Inbox files are read only if they are regular files, opened with
O_NOFOLLOW|O_NONBLOCK (a symlink is never followed, a FIFO never blocks) and read up to the size
limit; directories, the default outbox among them, are skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from ..errors import HushError

log = logging.getLogger("hushd.summarize.inbox")

SummarizeBytes = Callable[[bytes, str, threading.Event], str]
"""(file bytes, file name, stop) -> summary text; raises HushError for documents it refuses.
`stop` is set when the inbox stops: the summary should end (code `cancelled`) soon after."""

# Names that partial downloads and editors use while a file is still being written.
_TEMPORARY_SUFFIXES = (".part", ".partial", ".crdownload", ".download", ".tmp", ".swp", "~")


@dataclass
class _Pending:
    size: int
    mtime_ns: int
    stable_since: float


class Inbox:
    """Watches `inbox_dir` and writes a summary of each new document into `outbox_dir`.

    Args:
        inbox_dir: directory to watch (not recursive).
        outbox_dir: where summaries and error notes go; created if missing.
        summarize_bytes: does the work; called on the inbox's worker thread, one file at a time.
        max_bytes: larger files get an error note and are never read whole.
        settle_seconds: how long size and mtime must stay unchanged before a file is read.
    """

    def __init__(self, inbox_dir: Path, outbox_dir: Path, summarize_bytes: SummarizeBytes, *,
                 max_bytes: int = 20_000_000, settle_seconds: float = 2.0) -> None:
        # Absolute, because watchdog reports paths built from the string it was given.
        self.inbox_dir = Path(os.path.abspath(inbox_dir))
        self.outbox_dir = Path(outbox_dir)
        self.summarize_bytes = summarize_bytes
        self.max_bytes = max_bytes
        self.settle_seconds = settle_seconds
        self.processed = 0
        """Files handled (summary or error note written); for status displays and tests."""
        self.problem: str | None = None
        """Why the inbox refused to start (an outbox others could write to), or None."""
        self._outbox_fd: int | None = None
        self._pending: dict[str, _Pending | None] = {}
        self._seen: dict[str, str] = {}  # content sha256 -> name it was summarized under
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        """Watch the inbox; or, if the outbox is unsafe, log why, set `problem` and do nothing."""
        self.inbox_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._outbox_fd = _open_outbox(self.outbox_dir)
        except OutboxRefused as exc:
            self.problem = exc.message
            log.error("inbox not watched: %s", exc.message)
            return
        observer = Observer()
        observer.schedule(_Handler(self), str(self.inbox_dir), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        # Files that arrived while the daemon was down; done ones are skipped in _process.
        for entry in sorted(self.inbox_dir.iterdir()):
            self.notice(entry.name)
        self._worker = threading.Thread(target=self._run, name="hush-inbox", daemon=True)
        self._worker.start()
        log.info("watching inbox %s; summaries go to %s", self.inbox_dir, self.outbox_dir)

    def describe(self) -> dict[str, object]:
        """For `hush status`."""
        return {"dir": str(self.inbox_dir), "outbox": str(self.outbox_dir),
                "watching": self._worker is not None, "processed": self.processed,
                "error": self.problem}

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching. A summary under way is told to stop (and is redone at the next
        start); `timeout` bounds the wait for it."""
        self._stopping.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._worker is not None:
            self._worker.join(timeout)
        if self._outbox_fd is not None and (self._worker is None or
                                            not self._worker.is_alive()):
            os.close(self._outbox_fd)
            self._outbox_fd = None

    def notice(self, name: str) -> None:
        """Something happened to `name` in the inbox (called from watchdog's thread)."""
        if name.startswith(".") or name.endswith(_TEMPORARY_SUFFIXES):
            return
        with self._lock:
            self._pending[name] = None  # re-check size and mtime from scratch
        self._wake.set()

    def forget(self, name: str) -> None:
        with self._lock:
            self._pending.pop(name, None)

    def _run(self) -> None:
        tick = max(0.05, min(0.5, self.settle_seconds / 4))
        while not self._stopping.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            for name in self._ready():
                if self._stopping.is_set():
                    return
                try:
                    self._process(name)
                except Exception:
                    if self._stopping.is_set():
                        return  # the daemon is going away under it; redone at the next start
                    # The worker must outlive any one file: log it (the name, never the text)
                    # and leave a note, so the file is reported rather than silently skipped.
                    log.exception("inbox: unexpected failure on %s", name)
                    with contextlib.suppress(OSError):
                        self._write(f"{name}.error.txt",
                                    f"{name} could not be summarized because of an internal "
                                    "error; the daemon's log has the details.\n")

    def _ready(self) -> list[str]:
        """Names whose size and mtime have been stable for settle_seconds."""
        now = time.monotonic()
        ready = []
        with self._lock:
            names = list(self._pending)
        for name in names:
            try:
                found = (self.inbox_dir / name).lstat()
            except FileNotFoundError:
                self.forget(name)  # deleted (or renamed away) before we got to it
                continue
            except OSError as exc:
                log.warning("inbox: cannot stat %s: %s", name, exc.strerror)
                self.forget(name)
                continue
            if not stat.S_ISREG(found.st_mode):
                self.forget(name)  # directories (the default outbox), symlinks, FIFOs
                continue
            with self._lock:
                if name not in self._pending:
                    continue
                previous = self._pending[name]
                if previous is None or (previous.size, previous.mtime_ns) != (
                    found.st_size, found.st_mtime_ns):
                    self._pending[name] = _Pending(found.st_size, found.st_mtime_ns, now)
                elif now - previous.stable_since >= self.settle_seconds:
                    del self._pending[name]
                    ready.append(name)
        return ready

    def _process(self, name: str) -> None:
        summary_name, error_name = f"{name}.summary.md", f"{name}.error.txt"
        try:
            # O_NOFOLLOW: a symlink dropped in the inbox must not make the daemon read its
            # target; O_NONBLOCK: a FIFO must not hang the worker.
            fd = os.open(self.inbox_dir / name,
                         os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._write(error_name, f"{name} could not be read: {exc.strerror}.\n")
            return
        try:
            found = os.fstat(fd)
            if not stat.S_ISREG(found.st_mode):
                return  # directories, fifos, sockets, devices: not documents
            if self._newer_or_same(summary_name, found.st_mtime_ns) or self._newer_or_same(
                    error_name, found.st_mtime_ns):
                return  # handled before (e.g. by a previous run of the daemon)
            if found.st_size > self.max_bytes:
                self._write(error_name, f"{name} is {found.st_size:,} bytes; the inbox limit "
                                        f"is {self.max_bytes:,}. Split it into smaller files.\n")
                return
            data = _read_up_to(fd, self.max_bytes + 1)
        finally:
            os.close(fd)
        if len(data) > self.max_bytes:
            self._write(error_name, f"{name} grew past the inbox limit of {self.max_bytes:,} "
                                    "bytes while it was read. Split it into smaller files.\n")
            return
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            earlier = self._seen.get(digest)
        if earlier is not None and earlier != name:
            self._duplicate(name, earlier)
            return
        try:
            summary = self.summarize_bytes(data, name, self._stopping)
        except HushError as exc:
            if exc.code == "cancelled" and self._stopping.is_set():
                return  # no note: the file is summarized at the next start
            self._write(error_name, f"{exc.message}\n")
            return
        self._write(summary_name, f"# Summary of {name}\n\n{summary.strip()}\n")
        with contextlib.suppress(FileNotFoundError):
            # An earlier attempt failed; this one did not.
            os.unlink(error_name, dir_fd=self._outbox_fd)
        with self._lock:
            self._seen[digest] = name

    def _duplicate(self, name: str, earlier: str) -> None:
        """Same content as a file already summarized: one summary, never two."""
        if (self.inbox_dir / earlier).exists():
            log.info("inbox: %s has the same content as %s; not summarized again", name, earlier)
            self.processed += 1
            return
        # The earlier file is gone: this is a rename, so the summary follows the new name.
        with contextlib.suppress(FileNotFoundError):
            os.rename(f"{earlier}.summary.md", f"{name}.summary.md",
                      src_dir_fd=self._outbox_fd, dst_dir_fd=self._outbox_fd)
        with self._lock:
            for digest, owner in self._seen.items():
                if owner == earlier:
                    self._seen[digest] = name
        self.processed += 1

    def _newer_or_same(self, name: str, mtime_ns: int) -> bool:
        try:
            found = os.stat(name, dir_fd=self._outbox_fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return found.st_mtime_ns >= mtime_ns

    def _write(self, name: str, text: str) -> None:
        """Write `name` in the outbox atomically: a new temporary file (O_EXCL, a random name,
        never through a symlink), fsync, then rename, all relative to the outbox's fd."""
        outbox = self._outbox_fd
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600, dir_fd=outbox)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(tmp, name, src_dir_fd=outbox, dst_dir_fd=outbox)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=outbox)
            raise
        self.processed += 1


class OutboxRefused(HushError):
    code = "config"


def _open_outbox(path: Path) -> int:
    """The outbox's directory fd, after checking that only the daemon's user can write to it."""
    with contextlib.suppress(FileExistsError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir(mode=0o700)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise OutboxRefused(f"the outbox {path} cannot be opened as a directory "
                            f"({exc.strerror}); it must be a real directory, not a symlink. "
                            "Remove it, or set outbox_dir in hushd.yaml.") from None
    found = os.fstat(fd)
    problem = None
    if found.st_uid != os.geteuid():
        problem = f"belongs to uid {found.st_uid}"
    elif found.st_mode & 0o022:
        problem = f"is writable by {'group and others' if found.st_mode & 0o002 else 'group'}"
    if problem is not None:
        os.close(fd)
        raise OutboxRefused(
            f"the outbox {path} {problem}; it must belong to the daemon's user (uid "
            f"{os.geteuid()}) and be writable by nobody else, or another user could replace "
            f"what the daemon writes there. Remove it (it is made again, mode 0700), run "
            f"`chmod go-w {path}`, or set outbox_dir in hushd.yaml.")
    return fd


def _read_up_to(fd: int, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, min(1 << 20, limit - size))):
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts)


class _Handler(FileSystemEventHandler):
    """Forwards watchdog events (on its observer thread) to the inbox by file name."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    def on_created(self, event: FileCreatedEvent | DirCreatedEvent) -> None:
        self._touch(event.src_path)

    def on_modified(self, event: FileModifiedEvent | DirModifiedEvent) -> None:
        self._touch(event.src_path)

    def on_closed(self, event: FileClosedEvent) -> None:
        self._touch(event.src_path)

    def on_moved(self, event: FileMovedEvent | DirMovedEvent) -> None:
        self._gone(event.src_path)
        self._touch(event.dest_path)

    def on_deleted(self, event: FileDeletedEvent | DirDeletedEvent) -> None:
        self._gone(event.src_path)

    def _touch(self, path: str | bytes) -> None:
        name = self._name(path)
        if name is not None:
            self.inbox.notice(name)

    def _gone(self, path: str | bytes) -> None:
        name = self._name(path)
        if name is not None:
            self.inbox.forget(name)

    def _name(self, raw: str | bytes) -> str | None:
        path = Path(os.fsdecode(raw))
        # Only direct children of the inbox (a move out of it has its destination elsewhere).
        if path.parent != self.inbox.inbox_dir or path == self.inbox.inbox_dir:
            return None
        return path.name
