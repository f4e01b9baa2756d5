"""Runs generations on the model, off the event loop, one stream at a time (for now).

The engine blocks, so each generation runs in a worker thread and hands text back to the loop
with `call_soon_threadsafe`. Waiting generations are bounded: past `max_queued` a request gets a
`busy` error instead of an unbounded wait. Dynamic batching across clients replaces the single
slot in a later change (see docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

from .engine.generator import Engine, GenerationOptions
from .errors import HushError


@dataclass
class GenerationStats:
    """What the caller cannot see in the text: counts, timings and why it stopped."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    queued_s: float = 0.0
    first_token_s: float = 0.0
    total_s: float = 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        decode_s = self.total_s - self.first_token_s
        if self.completion_tokens <= 1 or decode_s <= 0:
            return 0.0
        return (self.completion_tokens - 1) / decode_s


@dataclass
class _Stream:
    queue: asyncio.Queue[str | BaseException | None] = field(default_factory=asyncio.Queue)


class Scheduler:
    def __init__(self, engine: Engine, *, max_queued: int) -> None:
        self.engine = engine
        self.max_queued = max_queued
        self._slot = asyncio.Lock()
        self._waiting = 0
        self.active = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    async def generate(
        self,
        messages: list[dict[str, str]],
        options: GenerationOptions,
        stats: GenerationStats,
        cancel: threading.Event,
    ) -> AsyncGenerator[str, None]:
        """Yield text pieces; fill `stats` as it goes. Closing the iterator stops compute."""
        if self._waiting >= self.max_queued:
            raise HushError(
                f"the model is busy: {self._waiting} requests are already waiting "
                f"(limit {self.max_queued}); try again shortly",
                code="busy",
            )
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        self._waiting += 1
        try:
            await self._slot.acquire()
        finally:
            self._waiting -= 1
        stream = _Stream()
        self.active += 1
        stats.queued_s = time.monotonic() - started

        def put(item: str | BaseException | None) -> None:
            loop.call_soon_threadsafe(stream.queue.put_nowait, item)

        def work() -> None:
            try:
                prompt = self.engine.prompt_ids(messages)
                generation = self.engine.stream(prompt, options, cancel=cancel)
                begun = time.monotonic()
                for piece in generation:
                    if stats.first_token_s == 0.0:
                        stats.first_token_s = time.monotonic() - begun
                    put(piece)
                stats.prompt_tokens = generation.prompt_tokens
                stats.completion_tokens = generation.completion_tokens
                stats.finish_reason = generation.finish_reason or "stop"
                stats.total_s = time.monotonic() - begun
                put(None)
            except BaseException as exc:  # handed to the loop, re-raised there
                put(exc)

        worker = loop.run_in_executor(None, work)

        def release(_: object) -> None:
            # The slot frees when compute has really stopped, not when the consumer left.
            self.active -= 1
            self._slot.release()

        worker.add_done_callback(release)
        try:
            while True:
                item = await stream.queue.get()
                if item is None:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            # Consumer gone (done, error, cancelled, client vanished): stop the model too.
            cancel.set()
            await asyncio.shield(worker)
