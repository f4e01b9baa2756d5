"""The real `hush` binary in a real terminal (tmux): type a question, watch the answer."""

from __future__ import annotations

import itertools
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import pytest

from .conftest import Daemon

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def _tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True,
                          timeout=30).stdout


def _wait_for(session: str, done: Callable[[str], bool], *, interval: float = 0.1,
              timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", session)
        if done(screen):
            return screen
        time.sleep(interval)
    raise AssertionError(_tmux("capture-pane", "-p", "-t", session))


def test_hush_in_tmux_streams_an_answer(real_daemon: Daemon) -> None:
    real_daemon.start()
    session = f"hush-test-{uuid.uuid4().hex[:8]}"
    hush = shlex.join([sys.executable, "-m", "hush.tui.cli", "--socket",
                       str(real_daemon.socket)])
    _tmux("new-session", "-d", "-s", session, "-x", "100", "-y", "30", hush)
    try:
        _wait_for(session, lambda screen: "● connected" in screen, timeout=60)
        _tmux("send-keys", "-t", session, "What is the capital of France?", "Enter")
        screen = " ".join(_wait_for(session, lambda screen: "tok/s" in screen).split())
        # The answer on the screen is the model's: it begins as `hush ask`'s greedy one does.
        asked = real_daemon.hush("ask", "--max-tokens", "16", "What is the capital of France?")
        assert asked.returncode == 0, asked.stderr
        opening = " ".join(asked.stdout.split()[:4])
        assert opening and opening in screen, (opening, screen)

        # Streaming: while a long answer is written, successive captures keep growing.
        _tmux("send-keys", "-t", session, "C-n")
        _tmux("send-keys", "-t", session, "Write a long story about a lighthouse keeper.",
              "Enter")
        sizes: list[int] = []

        def grown(screen: str) -> bool:
            # Done once the screen has stopped changing for a second.
            sizes.append(len("".join(screen.split())))
            return len(sizes) > 20 and len(set(sizes[-20:])) == 1

        _wait_for(session, grown, interval=0.05)
        increases = sum(1 for a, b in itertools.pairwise(sizes) if b > a)
        assert increases >= 8, sizes  # a whole answer appearing at once would be 2 or 3
        _tmux("send-keys", "-t", session, "C-q")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
