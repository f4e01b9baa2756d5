"""The lab a red-team run lives in: temporary directories, real hushd processes, samplers for
RSS and `status` latency, and children that act as another local user (uid 65534).

Everything here is bounded: a guard kills any daemon past the RSS ceiling, and the lab kills
every process it started, by pid, and removes its directories when it closes, whatever happened.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from .. import common
from .verdicts import Check, Skip
from .wire import status_once

OTHER_UID = 65534
"""The other local user attacks run as (nobody/nogroup on Debian-like systems)."""
TINY = "tiny"


def is_root() -> bool:
    return os.geteuid() == 0


def rss_mb(pid: int) -> float | None:
    try:
        return common.rss_mb(pid)
    except (OSError, ValueError):
        return None


class Hushd:
    """One real hushd process with private directories under the lab."""

    def __init__(self, lab: Lab, name: str, *, model: str, cache: Path,
                 settings: dict[str, Any], policies: dict[str, str] | None,
                 shared: bool) -> None:
        self.lab = lab
        self.name = name
        self.model = model
        self.cache = cache
        self.home = lab.root / f"hushd-{name}"
        self.run_dir = self.home / "run"
        self.socket = self.run_dir / "hushd.sock"
        self.state_dir = self.home / "state"
        self.config_dir = self.home / "config"
        self.policy_dir = self.config_dir / "policies"
        self.log_path = self.home / "hushd.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.rss_kills = 0
        """Times the lab's guard killed this daemon for passing the RSS ceiling."""
        self.home.mkdir(mode=0o711)
        for sub in (self.state_dir, self.config_dir, self.policy_dir):
            sub.mkdir(mode=0o700, parents=True)
        self.shared = shared and is_root()
        self.run_dir.mkdir(mode=0o700)
        full = dict(settings)
        if self.shared:
            # Another local user (uid 65534) may use this daemon: a group-shared socket.
            group = grp.getgrgid(OTHER_UID).gr_name
            os.chown(self.run_dir, 0, OTHER_UID)
            os.chmod(self.run_dir, 0o750)
            full.update(socket_group=group, socket_mode=0o660,
                        allow_uids=[*full.get("allow_uids", []), OTHER_UID])
        (self.config_dir / "hushd.yaml").write_text(yaml.safe_dump(full))
        for file_name, text in (policies or {}).items():
            (self.policy_dir / file_name).write_text(text)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "HUSH_SOCKET": str(self.socket),
                "HUSH_STATE_DIR": str(self.state_dir), "HUSH_CONFIG_DIR": str(self.config_dir),
                "HUSH_CACHE_DIR": str(self.cache)}

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 120.0) -> None:
        """Start and wait until `status` answers; raises RuntimeError with the exit code."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "hush.daemon", "--model", self.model], env=self.env,
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL,
                cwd=common.ROOT)
        self.lab.processes.append(self.process)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"hushd {self.name} exited with {self.process.returncode}")
            if self.socket.exists() and status_once(self.socket, 2.0)[0] is not None:
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"hushd {self.name} did not answer within {timeout:g} s")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def responsive(self, timeout: float = 5.0) -> bool:
        return self.alive() and status_once(self.socket, timeout)[0] is not None

    def ensure(self) -> None:
        """Restart the daemon if a case killed or wedged it."""
        if self.responsive(5.0):
            return
        self.kill()
        self.restarts += 1
        with contextlib.suppress(FileNotFoundError):
            self.socket.unlink()
        self.start()

    def calm(self, timeout: float = 30.0) -> bool:
        """Wait until `status` answers quickly again (a case may leave work behind)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ms, _ = status_once(self.socket, 2.0)
            if ms is not None and ms < 500:
                return True
            if not self.alive():
                return False
            time.sleep(0.2)
        return False

    def stop(self, timeout: float = 30.0) -> float | None:
        """SIGTERM, then seconds until exit; None if it had to be killed after `timeout`."""
        if not self.alive():
            return 0.0
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None
        return time.monotonic() - started

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)

    def rss(self) -> float | None:
        return rss_mb(self.pid) if self.alive() else None

    def log_mark(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, mark: int) -> str:
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode("utf-8", errors="replace")

    def hush(self, *args: str, timeout: float = 60.0) -> tuple[int | None, str, str]:
        """The real `hush` command line: (exit code or None on timeout, stdout, stderr)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "hush.tui.cli", "--socket", str(self.socket), *args],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, cwd=common.ROOT)
        self.lab.processes.append(process)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate(timeout=10)
            return None, out.decode(errors="replace"), err.decode(errors="replace")
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


class Sampler:
    """Samples a daemon's RSS (and optionally `status` latency) on threads while a case runs."""

    def __init__(self, daemon: Hushd, *, ping_s: float | None = 0.5,
                 ping_timeout: float = 5.0) -> None:
        self.daemon = daemon
        self.ping_s = ping_s
        self.ping_timeout = ping_timeout
        self.baseline = daemon.rss() or 0.0
        self.peak = self.baseline
        self.latencies: list[float] = []
        self.timeouts = 0
        self.kills_before = daemon.rss_kills
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss, daemon=True)]
        if ping_s is not None:
            self._threads.append(threading.Thread(target=self._ping, daemon=True))

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.ping_timeout + 2)

    def _rss(self) -> None:
        while not self._stop.wait(0.2):
            if (rss := self.daemon.rss()) is not None:
                self.peak = max(self.peak, rss)

    @property
    def killed_for_rss(self) -> bool:
        return self.daemon.rss_kills > self.kills_before

    def _ping(self) -> None:
        assert self.ping_s is not None
        while not self._stop.wait(self.ping_s):
            if not self.daemon.alive():
                continue
            ms, _ = status_once(self.daemon.socket, self.ping_timeout)
            if ms is None:
                self.timeouts += 1
            else:
                self.latencies.append(ms)

    @property
    def growth(self) -> float:
        return self.peak - self.baseline

    def judge(self, check: Check, *, rss_bound_mb: float, latency_bound_ms: float) -> None:
        """Record the figures and require bounded memory and a responsive `status`."""
        check.figures.update(rss_baseline_mb=round(self.baseline), rss_peak_mb=round(self.peak))
        if self.latencies or self.timeouts:
            check.figures.update(status_max_ms=round(max(self.latencies, default=0.0), 1),
                                 status_timeouts=self.timeouts)
        if self.killed_for_rss:
            check.fail(f"RSS passed {self.daemon.lab.rss_ceiling_mb:,} MB; the harness killed "
                       "hushd")
        else:
            check.require(self.growth <= rss_bound_mb,
                          f"RSS grew {self.growth:,.0f} MB (bound {rss_bound_mb:,.0f})")
        if self.ping_s is not None:
            worst = max(self.latencies, default=0.0)
            check.require(self.timeouts == 0 and worst <= latency_bound_ms,
                          f"status stalled ({self.timeouts} pings over {self.ping_timeout:g} s, "
                          f"slowest answer {worst:,.0f} ms)" if self.timeouts else
                          f"status slowed to {worst:,.0f} ms (bound {latency_bound_ms:,.0f})")


class OtherUser:
    """A forked child running `target(report, *args)` as uid/gid 65534 (or, for attacks any
    client can make, as this user when not root); it reports JSON lines on the `report` pipe."""

    def __init__(self, lab: Lab, target: Callable[..., Any], *args: Any,
                 switch_user: bool = True) -> None:
        if switch_user and not is_root():
            raise Skip("needs root to act as another user (uid 65534)")
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the harness
            code = 1
            try:
                os.close(read_fd)
                os.closerange(3, write_fd)
                os.closerange(write_fd + 1, 4096)
                if switch_user:
                    os.setgroups([])
                    os.setgid(OTHER_UID)
                    os.setuid(OTHER_UID)
                report = os.fdopen(write_fd, "w", buffering=1)
                result = target(report, *args)
                report.write(json.dumps({"result": result}) + "\n")
                report.flush()
                code = 0
            except BaseException as exc:
                with contextlib.suppress(BaseException):
                    os.write(write_fd, (json.dumps({"error": f"{type(exc).__name__}: {exc}"})
                                        + "\n").encode())
            finally:
                os._exit(code)
        os.close(write_fd)
        self.pid = pid
        self.pipe = os.fdopen(read_fd, "r")
        self.done = False
        lab.children.append(self)

    def line(self, timeout: float) -> dict[str, Any] | None:
        """The next JSON line the child wrote, or None (timeout or it exited)."""
        ready, _, _ = select.select([self.pipe], [], [], timeout)
        if not ready:
            return None
        text = self.pipe.readline()
        if not text:
            return None
        value = json.loads(text)
        return value if isinstance(value, dict) else None

    def result(self, timeout: float) -> Any:
        """The target's return value; raises RuntimeError if it failed or ran too long."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            message = self.line(left)
            if message is None:
                break
            if "result" in message:
                self.stop()
                return message["result"]
            if "error" in message:
                self.stop()
                raise RuntimeError(f"the uid {OTHER_UID} child failed: {message['error']}")
        self.stop()
        raise RuntimeError(f"the uid {OTHER_UID} child gave no result within {timeout:g} s")

    def stop(self) -> None:
        if self.done:
            return
        self.done = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        self.pipe.close()


class Lab:
    """The temporary world of one red-team run; `close()` leaves nothing behind."""

    def __init__(self, *, real_model: str, rss_ceiling_mb: int) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hush-rt-", dir="/tmp"))
        os.chmod(self.root, 0o711)  # uid 65534 may pass through to what it is given
        self.real_model = real_model
        self.rss_ceiling_mb = rss_ceiling_mb
        self.processes: list[subprocess.Popen[bytes]] = []
        self.children: list[OtherUser] = []
        self.daemons: list[Hushd] = []
        self._tiny_cache: Path | None = None
        self._closing = threading.Event()
        self._guard = threading.Thread(target=self._guard_rss, daemon=True)
        self._guard.start()

    def _guard_rss(self) -> None:
        """Kill any daemon whose RSS passes the ceiling, whatever is running: no case may
        exhaust the machine (the cases see it through `Hushd.rss_kills`)."""
        while not self._closing.wait(0.25):
            for daemon in list(self.daemons):
                rss = daemon.rss()
                if rss is not None and rss > self.rss_ceiling_mb:
                    daemon.rss_kills += 1
                    daemon.kill()
                    print(f"  (hushd {daemon.name} passed {self.rss_ceiling_mb:,} MB RSS and "
                          "was killed)", flush=True)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closing.set()
        self._guard.join(5)
        for child in self.children:
            child.stop()
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def tiny_cache(self) -> Path:
        """A cache holding the tiny random-weight model (answers in milliseconds), built once.
        Its 8,192-token context is SmolLM2's, so documents are chunked as for a real model."""
        if self._tiny_cache is None:
            from hush.daemon.engine.convert.testing import build_tiny_model

            root = self.root / "cache"
            build_tiny_model(root / "models" / TINY, context_length=8192)
            self._tiny_cache = root
        return self._tiny_cache

    def real_cache(self) -> Path:
        from hush.daemon.paths import CacheLayout

        layout = CacheLayout.default()
        if not (layout.models / self.real_model).is_dir():
            raise Skip(f"needs the real model: run `hush model pull {self.real_model}`")
        return layout.root

    def daemon(self, name: str, *, real: bool = False, settings: dict[str, Any] | None = None,
               policies: dict[str, str] | None = None, shared: bool = True) -> Hushd:
        """A daemon set up (not started) with the tiny model, or the real one with `real`."""
        cache = self.real_cache() if real else self.tiny_cache()
        daemon = Hushd(self, name, model=self.real_model if real else TINY, cache=cache,
                       settings=settings or {}, policies=policies, shared=shared)
        self.daemons.append(daemon)
        return daemon

    def path(self, name: str, *, mode: int = 0o700) -> Path:
        """A fresh directory under the lab."""
        path = self.root / name
        path.mkdir(mode=mode)
        os.chmod(path, mode)
        return path
