"""The systemd units: verified by systemd's own tools, and the daemon run under their limits."""

from __future__ import annotations

import os
import platform
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Daemon
from .quiz import daemon_quiz, passes

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
needs_systemd = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze is not installed")


def _render(unit: Path, dest: Path) -> Path:
    """Fill the installer's placeholders the way `hushd install` does."""
    text = unit.read_text().replace("@VENV@", sys.prefix).replace("@DOCDIR@", str(ROOT))
    out = dest / unit.name
    out.write_text(text)
    return out


def _analyze(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)))


@needs_systemd
def test_system_units_verify(tmp_path: Path) -> None:
    units = [_render(SYSTEMD / n, tmp_path) for n in ("hushd.service", "hushd.socket")]
    result = _analyze("verify", *map(str, units), tmp=tmp_path)
    assert result.returncode == 0, result.stderr


@needs_systemd
def test_user_units_verify(tmp_path: Path) -> None:
    units = [_render(SYSTEMD / "user" / n, tmp_path) for n in ("hushd.service", "hushd.socket")]
    result = _analyze("--user", "verify", *map(str, units), tmp=tmp_path)
    assert result.returncode == 0, result.stderr


@needs_systemd
def test_service_exposure_is_safe(tmp_path: Path) -> None:
    unit = _render(SYSTEMD / "hushd.service", tmp_path)
    result = _analyze("security", "--offline=yes", str(unit), tmp=tmp_path)
    match = re.search(r"Overall exposure level for hushd\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= 1.0


def test_network_is_closed_to_the_service() -> None:
    text = (SYSTEMD / "hushd.service").read_text()
    for line in ("PrivateNetwork=yes", "IPAddressDeny=any", "RestrictAddressFamilies=AF_UNIX",
                 "UMask=0077", "Type=notify"):
        assert f"\n{line}\n" in text, line
    # W^X would make CTranslate2's run-time generated x86 kernels compute garbage.
    for unit in (SYSTEMD / "hushd.service", SYSTEMD / "user" / "hushd.service"):
        assert "\nMemoryDenyWriteExecute=yes" not in unit.read_text(), unit


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
def test_daemon_answers_under_the_units_constraints(real_daemon: Daemon) -> None:
    # No network namespace access, umask 0077 and no_new_privs, with the real model.
    real_daemon.program = [sys.executable, "-m", "tests.sandbox", "--", sys.executable, "-m",
                           "hush.daemon"]
    real_daemon.start()
    assert real_daemon.process is not None
    status = Path(f"/proc/{real_daemon.process.pid}/status").read_text()
    assert re.search(r"NoNewPrivs:\s+1", status)
    interfaces = Path(f"/proc/{real_daemon.process.pid}/net/dev").read_text()
    assert [line.split(":")[0].strip() for line in interfaces.splitlines()[2:]] == ["lo"]
    result = real_daemon.hush("ask", "--max-tokens", "24", "What is the capital of France?")
    assert result.returncode == 0, result.stderr + real_daemon.log
    # Garbage kernels (the W^X failure) get none right; the sandbox must cost no answers.
    wrong = daemon_quiz(real_daemon.socket)
    assert passes(wrong), wrong
    for path in real_daemon.state_dir.rglob("*"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


@pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace needs root")
def test_daemon_refuses_write_xor_execute_memory_with_the_fix(real_daemon: Daemon) -> None:
    # Someone adds MemoryDenyWriteExecute=yes back: without a check, CTranslate2's x86 kernels
    # (generated at run time) silently computed garbage. hushd must stop and say why.
    if platform.machine() != "x86_64":
        pytest.skip("only x86 CTranslate2 generates its kernels at run time")
    real_daemon.program = [sys.executable, "-m", "tests.sandbox", "--deny-write-execute", "--",
                           sys.executable, "-m", "hush.daemon"]
    real_daemon.start(wait=False)
    assert real_daemon.process is not None
    assert real_daemon.process.wait(60) != 0
    assert "Remove MemoryDenyWriteExecute=yes" in real_daemon.log
