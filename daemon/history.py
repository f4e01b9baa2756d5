"""The daemon's side of the encrypted store: one worker thread, the locked state, unlock.

SQLite and the key derivation block, so every store call runs on a single dedicated thread
(which also keeps the store's writes in the order the loop issued them). A store protected
by a passphrase opens locked: chats are refused with `locked` until `hush unlock` sends the
passphrase.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .errors import HushError
from .store import DATABASE_NAME, KeySource, Store, StoreLocked, open_store, rotate_keys

log = logging.getLogger("hushd.history")

T = TypeVar("T")


class History:
    def __init__(self, state_dir: Path, key_file: Path) -> None:
        self.database = state_dir / DATABASE_NAME
        self.key_file = key_file
        self.store: Store | None = None
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="hush-store")

    @property
    def locked(self) -> bool:
        return self.store is None

    @property
    def key_source(self) -> KeySource | None:
        return self.store.key_source if self.store else None

    async def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, functools.partial(fn, *args, **kwargs))

    async def open(self, passphrase: str | None = None) -> None:
        """Open the store; stays locked (no error) when it needs a passphrase."""
        try:
            self.store = await self.run(open_store, self.database, key_file=self.key_file,
                                        passphrase=passphrase)
        except StoreLocked:
            if passphrase is not None:
                raise
            log.warning("the store is protected by a passphrase: locked until `hush unlock`")
            return
        log.info("store open (key from %s)", self.store.key_source)

    async def unlock(self, passphrase: str) -> None:
        if self.store is not None:
            raise HushError("the store is already unlocked", code="not_locked")
        await self.open(passphrase)

    def require(self) -> Store:
        if self.store is None:
            raise HushError("the conversation store is locked; run `hush unlock` and give its "
                            "passphrase", code="locked")
        return self.store

    async def call(self, method: Callable[..., T], *args: object, **kwargs: object) -> T:
        """Run a Store method (unbound, e.g. Store.list) on the open store."""
        store = self.require()
        return await self.run(method, store, *args, **kwargs)

    async def rotate(self, passphrase: str | None) -> KeySource:
        store = self.require()
        return await self.run(rotate_keys, store, passphrase=passphrase)

    async def close(self) -> None:
        if self.store is not None:
            await self.run(self.store.close)
            self.store = None
        self._thread.shutdown(wait=True)
