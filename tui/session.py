"""The UI's link to hushd: one client, and a reconnect loop when the daemon goes away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from hush.daemon.client import Client
from hush.daemon.errors import DaemonUnavailable, HushError
from hush.daemon.protocol import Event

from .documents import send_document

StateCallback = Callable[[str, str | None], None]


class Session:
    """Hands out the live client, or raises DaemonUnavailable while reconnecting.

    `on_state(state, detail)` hears "connecting", "connected", "reconnecting" and
    "disconnected" so the UI can show them instead of a traceback.
    """

    def __init__(self, socket: Path, on_state: StateCallback) -> None:
        self.socket = socket
        self.on_state = on_state
        self.client: Client | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self.model = "?"

    async def connect(self) -> bool:
        self.on_state("connecting", None)
        try:
            self.client = await Client.connect(self.socket, timeout=5)
        except HushError as exc:
            self.on_state("disconnected", exc.message)
            self.start_reconnect()
            return False
        self.model = self.client.hello["model"] if self.client.hello else "?"
        self.on_state("connected", None)
        return True

    def start_reconnect(self) -> None:
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = 0.2
        while True:
            await asyncio.sleep(delay)
            self.on_state("reconnecting", None)
            try:
                self.client = await Client.connect(self.socket, timeout=5)
            except HushError:
                delay = min(delay * 2, 5.0)
                continue
            self.model = self.client.hello["model"] if self.client.hello else "?"
            self.on_state("connected", None)
            return

    def lost(self) -> None:
        """The connection broke mid-request: drop it and start reconnecting."""
        client, self.client = self.client, None
        if client is not None:
            task = asyncio.create_task(client.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        self.start_reconnect()

    def _live(self) -> Client:
        if self.client is None:
            raise DaemonUnavailable("not connected to hushd; reconnecting…")
        return self.client

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            return await self._live().call(method, params)
        except DaemonUnavailable:
            self.lost()
            raise

    async def request(self, method: str, params: dict[str, Any],
                      request_id: str) -> AsyncIterator[Event]:
        try:
            async for event in self._live().request(method, params, request_id=request_id):
                yield event
        except DaemonUnavailable:
            self.lost()
            raise

    async def upload(self, path: Path) -> str:
        """Send a document the user chose; returns its id for `summarize`."""
        try:
            return await send_document(self._live(), path)
        except DaemonUnavailable:
            self.lost()
            raise

    async def close(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        if self.client is not None:
            await self.client.close()
