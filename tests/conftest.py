"""Fixtures every test reuses: private dirs, short socket paths, real daemon processes, models."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from hush.daemon import paths
from hush.daemon.engine.convert.pull import fetch_gguf, pull
from hush.daemon.engine.convert.testing import build_tiny_model

REAL_MODEL = "smollm2-135m"
TINY_MODEL = "tiny"


@pytest.fixture(scope="session")
def real_cache() -> Path:
    """The machine's model cache with smollm2-135m in it (fetched once per machine)."""
    layout = paths.CacheLayout.default()
    pull(REAL_MODEL, layout.models, layout.downloads)
    return layout.root


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The verified SmolLM2 GGUF from the machine's download cache."""
    return fetch_gguf(REAL_MODEL, paths.CacheLayout.default().downloads)


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache holding a tiny random-weight model: loads and streams in milliseconds."""
    root = tmp_path_factory.mktemp("cache")
    build_tiny_model(root / "models" / TINY_MODEL, context_length=1 << 16)
    return root


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="hush-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class RawConnection:
    """A bare socket speaking newline-delimited JSON, for sending what clients never would."""

    opened: ClassVar[list[RawConnection]] = []

    def __init__(self, path: Path) -> None:
        RawConnection.opened.append(self)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(str(path))
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def frame(self) -> dict[str, object]:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "daemon closed the connection"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        value = json.loads(line)
        assert isinstance(value, dict)
        return value

    def hello(self) -> dict[str, object]:
        self.send(b'{"type":"hello","protocol":1}\n')
        return self.frame()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(autouse=True)
def _close_raw_connections() -> Iterator[None]:
    yield
    while RawConnection.opened:
        RawConnection.opened.pop().close()


@dataclass
class Daemon:
    """A real `hushd` process on a real socket."""

    socket: Path
    state_dir: Path
    config_dir: Path
    cache_dir: Path
    model: str
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)
    program: list[str] = field(default_factory=lambda: [sys.executable, "-m", "hush.daemon"])
    """How hushd is started: from the test environment, or an installed console script."""
    process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HUSH_SOCKET=str(self.socket),
            HUSH_STATE_DIR=str(self.state_dir),
            HUSH_CONFIG_DIR=str(self.config_dir),
            HUSH_CACHE_DIR=str(self.cache_dir),
        )
        env.update(self.extra_env)
        return env

    def command(self) -> list[str]:
        return [*self.program, "--model", self.model, *self.extra_args]

    def start(self, *, wait: bool = True) -> Daemon:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command(), env=self.env, stderr=log,
                                        stdout=subprocess.DEVNULL)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"hushd exited with {self.process.returncode}:\n{self.log}")
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(self.socket))
                return
            time.sleep(0.05)
        raise AssertionError(f"hushd did not listen within {timeout} s:\n{self.log}")

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def hush(self, *args: str, input: str | None = None,
             timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run the real `hush` command line against this daemon."""
        return subprocess.run(
            [sys.executable, "-m", "hush.tui.cli", "--socket", str(self.socket), *args],
            env=self.env, input=input, capture_output=True, text=True, timeout=timeout,
        )


def _daemon(short_dir: Path, cache: Path, model: str) -> Daemon:
    for sub in ("run", "state", "config"):
        (short_dir / sub).mkdir(mode=0o700)
    return Daemon(
        socket=short_dir / "run" / "hushd.sock",
        state_dir=short_dir / "state",
        config_dir=short_dir / "config",
        cache_dir=cache,
        model=model,
        log_path=short_dir / "hushd.log",
    )


@pytest.fixture
def tiny_daemon(short_dir: Path, tiny_cache: Path) -> Iterator[Daemon]:
    """A daemon set up (not started) with the tiny model; stopped after the test."""
    daemon = _daemon(short_dir, tiny_cache, TINY_MODEL)
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait()


@pytest.fixture
def real_daemon(short_dir: Path, real_cache: Path) -> Iterator[Daemon]:
    """A daemon set up (not started) with smollm2-135m; stopped after the test."""
    daemon = _daemon(short_dir, real_cache, REAL_MODEL)
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait()


@pytest.fixture
def catalog_daemon(short_dir: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    """A daemon set up (not started) with the catalog model named by indirect parametrization.

    The model is pulled into the machine's cache first (downloaded and imported once per
    machine). Use: `@pytest.mark.parametrize("catalog_daemon", ["gemma3-270m"], indirect=True)`.
    """
    name = str(request.param)
    layout = paths.CacheLayout.default()
    pull(name, layout.models, layout.downloads)
    daemon = _daemon(short_dir, layout.root, name)
    yield daemon
    if daemon.process is not None and daemon.process.poll() is None:
        daemon.process.kill()
        daemon.process.wait()


@pytest.fixture
def started_tiny_daemon(tiny_daemon: Daemon) -> Daemon:
    return tiny_daemon.start()
