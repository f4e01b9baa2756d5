"""Hot reload: watch the policy directory, rebuild off the loop, swap only what validates.

watchdog calls back on its own thread, so its handler only hops to the loop. There a timer
debounces bursts of events (an editor's save is several); the new PolicySet is built in a worker
thread, and swapped in with one assignment only if every file validates. Otherwise the old set
stays in force and `last_error` says why, for `hush status`, the logs and the UI.

A file saved in place can parse while half written, so the worker uses a file only once it has
stopped changing for `settle_s` (source.read_stable); saving by rename is never half seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from .dirs import private_dir
from .loader import PolicySet, load_policy_set
from .source import PolicyError

log = logging.getLogger("hushd.policy.watcher")

_SUFFIXES = (".yaml", ".yml")
SETTLE_S = 1.0
"""How long a just-modified policy file must stay unchanged before a reload uses it."""
_T = TypeVar("_T")


class _Handler(FileSystemEventHandler):
    def __init__(self, notify: Callable[[], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reading a file (our own loader does) is not a change
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        if event.is_directory or any(p.endswith(_SUFFIXES) for p in paths):
            self._notify()


class PolicyWatcher:
    """Keeps `current` up to date with the directory; call `start()` and `stop()` on the loop."""

    def __init__(self, directory: Path, initial: PolicySet, *,
                 loop: asyncio.AbstractEventLoop | None = None,
                 on_swap: Callable[[PolicySet], None] | None = None,
                 on_error: Callable[[PolicyError], None] | None = None,
                 debounce_s: float = 0.2, settle_s: float = SETTLE_S) -> None:
        self.directory = directory
        self._current = initial
        self.last_error: PolicyError | None = None
        self.reloads = 0
        self._loop = loop or asyncio.get_running_loop()
        self._on_swap = on_swap
        self._on_error = on_error
        self._debounce_s = debounce_s
        self._settle_s = settle_s
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._observer: BaseObserver | None = None

    @property
    def current(self) -> PolicySet:
        """The set in force; take it once per request and keep it to the end."""
        return self._current

    def start(self) -> None:
        private_dir(self.directory)
        observer = Observer()
        observer.schedule(_Handler(self._from_thread), str(self.directory), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            await asyncio.to_thread(observer.join, 5)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    def _from_thread(self) -> None:
        # watchdog's thread: never touch state here, only hop to the loop.
        # RuntimeError: the loop closed during shutdown; nothing is left to reload for.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.changed)

    def changed(self) -> None:
        """Something in the directory changed: reload after a quiet period."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._debounce_s, self._kick)

    def _kick(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            self._again = True  # a reload is running; run once more when it ends
            return
        self._task = self._loop.create_task(self._reload())

    async def reload(self) -> PolicySet:
        """Reload now (also used by SIGHUP); returns the set in force afterwards."""
        self._kick()
        if self._task is not None:
            await asyncio.shield(self._task)
        return self._current

    @staticmethod
    def _notify(callback: Callable[[_T], None] | None, value: _T) -> None:
        if callback is None:
            return
        try:
            callback(value)
        except Exception:
            # A listener's bug must not stop reloads; the swap itself already happened.
            log.exception("policy watcher callback %r failed", callback)

    async def _reload(self) -> None:
        while True:
            self._again = False
            try:
                fresh = await asyncio.to_thread(load_policy_set, self.directory,
                                                settle_s=self._settle_s)
            except PolicyError as exc:
                self.last_error = exc
                log.error("policy reload failed; the previous policy %s stays in force:\n%s",
                          self._current.version, exc)
                self._notify(self._on_error, exc)
            else:
                self.last_error = None
                if fresh.version != self._current.version:
                    self._current = fresh  # the swap: one assignment, seen whole or not at all
                    self.reloads += 1
                    log.info("policy %s (%s) in force", fresh.shared.name, fresh.version)
                    self._notify(self._on_swap, fresh)
            if not self._again:
                return
