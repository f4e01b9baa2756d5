"""A watched inbox: documents dropped into a directory are summarized into an outbox.

The directories come from the daemon's own configuration, never from a client. watchdog reports
changes on its observer thread; a single worker thread decides when a file is complete (its size
and modification time unchanged for `settle_seconds`, since writers give no "done" signal), reads
it, and writes `<name>.summary.md` (or `<name>.error.txt`) into the outbox with tmp + rename, so
a reader of the outbox never sees half a summary. Nothing raised while handling one file
escapes the worker: a bad file gets an error note, and the inbox keeps going.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
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

log = logging.getLogger(__name__)

SummarizeBytes = Callable[[bytes, str], str]
"""(file bytes, file name) -> summary text; raises HushError for documents it refuses."""

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
        self._pending: dict[str, _Pending | None] = {}
        self._seen: dict[str, str] = {}  # content sha256 -> name it was summarized under
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        self.inbox_dir.mkdir(parents=True, exist_ok=True)
        self.outbox_dir.mkdir(parents=True, exist_ok=True)
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

    def stop(self, timeout: float = 10.0) -> None:
        """Stop watching. A summary under way finishes first (bounded by `timeout`)."""
        self._stopping.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        if self._worker is not None:
            self._worker.join(timeout)

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
                    # The worker must outlive any one file: log it (the name, never the text)
                    # and leave a note, so the file is reported rather than silently skipped.
                    log.exception("inbox: unexpected failure on %s", name)
                    with contextlib.suppress(OSError):
                        self._write(self.outbox_dir / f"{name}.error.txt",
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
                stat = (self.inbox_dir / name).stat()
            except FileNotFoundError:
                self.forget(name)  # deleted (or renamed away) before we got to it
                continue
            except OSError as exc:
                log.warning("inbox: cannot stat %s: %s", name, exc.strerror)
                self.forget(name)
                continue
            with self._lock:
                if name not in self._pending:
                    continue
                previous = self._pending[name]
                if previous is None or (previous.size, previous.mtime_ns) != (
                    stat.st_size, stat.st_mtime_ns):
                    self._pending[name] = _Pending(stat.st_size, stat.st_mtime_ns, now)
                elif now - previous.stable_since >= self.settle_seconds:
                    del self._pending[name]
                    ready.append(name)
        return ready

    def _process(self, name: str) -> None:
        path = self.inbox_dir / name
        summary_path = self.outbox_dir / f"{name}.summary.md"
        error_path = self.outbox_dir / f"{name}.error.txt"
        try:
            # O_NOFOLLOW: a symlink dropped in the inbox must not make the daemon read its target.
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._write(error_path, f"{name} could not be read: {exc.strerror}.\n")
            return
        with os.fdopen(fd, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if not _is_regular(stat.st_mode):
                return  # directories, fifos, sockets: not documents
            if _newer_or_same(summary_path, stat.st_mtime_ns) or _newer_or_same(
                    error_path, stat.st_mtime_ns):
                return  # handled before (e.g. by a previous run of the daemon)
            if stat.st_size > self.max_bytes:
                self._write(error_path, f"{name} is {stat.st_size:,} bytes; the inbox limit is "
                                        f"{self.max_bytes:,}. Split it into smaller files.\n")
                return
            data = handle.read(self.max_bytes + 1)
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            earlier = self._seen.get(digest)
        if earlier is not None and earlier != name:
            self._duplicate(name, earlier)
            return
        try:
            summary = self.summarize_bytes(data, name)
        except HushError as exc:
            self._write(error_path, f"{exc.message}\n")
            return
        self._write(summary_path, f"# Summary of {name}\n\n{summary.strip()}\n")
        with contextlib.suppress(FileNotFoundError):
            error_path.unlink()  # an earlier attempt failed; this one did not
        with self._lock:
            self._seen[digest] = name

    def _duplicate(self, name: str, earlier: str) -> None:
        """Same content as a file already summarized: one summary, never two."""
        if (self.inbox_dir / earlier).exists():
            log.info("inbox: %s has the same content as %s; not summarized again", name, earlier)
            self.processed += 1
            return
        # The earlier file is gone: this is a rename, so the summary follows the new name.
        old = self.outbox_dir / f"{earlier}.summary.md"
        new = self.outbox_dir / f"{name}.summary.md"
        with contextlib.suppress(FileNotFoundError):
            os.replace(old, new)
        with self._lock:
            for digest, owner in self._seen.items():
                if owner == earlier:
                    self._seen[digest] = name
        self.processed += 1

    def _write(self, target: Path, text: str) -> None:
        """Write atomically: a temporary file in the same directory, fsync, then rename."""
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise
        self.processed += 1


def _is_regular(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _newer_or_same(path: Path, mtime_ns: int) -> bool:
    try:
        return path.stat().st_mtime_ns >= mtime_ns
    except FileNotFoundError:
        return False


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
