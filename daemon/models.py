"""The model hushd serves: loaded lazily, unloaded when idle, switched on request.

Loading blocks for seconds, so it runs in a thread. Every generation holds a reference to the
engine it started on; a switched-out or idle engine is closed only when nothing holds it, so
requests in flight finish on the model they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from .engine.catalog import installed
from .engine.errors import ModelError
from .engine.generator import Engine
from .engine.model_info import ModelInfo
from .memory import return_freed_memory

log = logging.getLogger("hushd.models")

Loader = Callable[[Path], Engine]


class ModelHolder:
    def __init__(self, models_dir: Path, name: str, loader: Loader,
                 keep_alive_s: float | None) -> None:
        self.models_dir = models_dir
        self.name = name
        self._loader = loader
        self.keep_alive_s = keep_alive_s
        self.engine: Engine | None = None
        self._users: dict[int, int] = {}  # id(engine) -> generations holding it
        self._retired: dict[int, Engine] = {}
        self._lock = asyncio.Lock()
        self.last_used = time.monotonic()
        self.loads = 0

    @property
    def loaded(self) -> bool:
        return self.engine is not None

    def path_of(self, name: str) -> Path:
        path = self.models_dir / name
        if not (path / "hush-model.json").exists():
            raise ModelError(
                f"model {name!r} is not installed in {self.models_dir}; run "
                f"`hush model pull {name}` (or `hush model import FILE.gguf --name {name}`) first"
            )
        return path

    async def acquire(self) -> Engine:
        """The current engine, loading it if needed; pair with `release`."""
        async with self._lock:
            if self.engine is None:
                started = time.monotonic()
                self.engine = await asyncio.to_thread(self._loader, self.path_of(self.name))
                self.loads += 1
                log.info("loaded model %s in %.2f s", self.name, time.monotonic() - started)
            engine = self.engine
        self._users[id(engine)] = self._users.get(id(engine), 0) + 1
        self.last_used = time.monotonic()
        return engine

    def release(self, engine: Engine) -> None:
        key = id(engine)
        self._users[key] -= 1
        self.last_used = time.monotonic()
        if self._users[key] == 0:
            del self._users[key]
            if (retired := self._retired.pop(key, None)) is not None:
                retired.close()

    def in_use(self) -> int:
        return sum(self._users.values())

    async def use(self, name: str) -> ModelInfo:
        """Serve another installed model from now on; the old one finishes its requests."""
        path = self.path_of(name)
        async with self._lock:
            new = await asyncio.to_thread(self._loader, path)
            old, self.engine, self.name = self.engine, new, name
            self.loads += 1
        if old is not None:
            self._retire(old)
        log.info("now serving model %s", name)
        return new.info

    def _retire(self, engine: Engine) -> None:
        if id(engine) in self._users:
            self._retired[id(engine)] = engine  # closed by the last release
        else:
            engine.close()

    async def unload_when_idle(self) -> None:
        """Free the model after keep_alive_s without use (for small devices)."""
        if self.keep_alive_s is None:
            return
        while True:
            await asyncio.sleep(max(0.05, min(self.keep_alive_s / 4, 5.0)))
            idle = time.monotonic() - self.last_used
            if self.engine is not None and not self.in_use() and idle >= self.keep_alive_s:
                async with self._lock:
                    engine, self.engine = self.engine, None
                if engine is not None:
                    engine.close()
                    return_freed_memory()
                    log.info("unloaded model %s after %.0f s idle", self.name, idle)

    def close(self) -> None:
        for engine in [self.engine, *self._retired.values()]:
            if engine is not None:
                with contextlib.suppress(Exception):
                    engine.close()
        self.engine = None
        self._retired.clear()

    def describe(self) -> list[dict[str, object]]:
        """Installed models, for `models.list`."""
        out = []
        for name, info in installed(self.models_dir).items():
            path = self.models_dir / name
            size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
            out.append({
                "name": name,
                "architecture": info.architecture,
                "parameters": info.parameter_count,
                "size_bytes": size,
                "context_length": info.context_length,
                "quantization": info.quantization,
                "chat_template": info.chat_template is not None,
                "active": name == self.name,
            })
        return out
