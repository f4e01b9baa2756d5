"""The whole path with the real default model: hush -> socket -> hushd -> CTranslate2 -> back."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from hush.daemon.client import Client

from .conftest import Daemon
from .quiz import daemon_quiz, passes


def test_daemon_answers_most_easy_questions(real_daemon: Daemon) -> None:
    real_daemon.start()
    wrong = daemon_quiz(real_daemon.socket)
    assert passes(wrong), wrong


def test_hush_ask_streams_its_answer(real_daemon: Daemon) -> None:
    real_daemon.start()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hush.tui.cli", "--socket", str(real_daemon.socket), "ask",
         "--max-tokens", "160", "Write a short paragraph about the history of lighthouses."],
        env=real_daemon.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = proc.stdout.read1(64)  # type: ignore[attr-defined]
    # Streaming: the first bytes reach us while the model is still generating the rest.
    still_running = proc.poll() is None
    rest, err = proc.communicate(timeout=180)
    answer = (first + rest).decode()
    assert proc.returncode == 0, err.decode()
    assert len(answer.split()) > 20  # a paragraph, streamed
    assert first and still_running


async def test_cancel_after_first_tokens_stops_the_real_model(real_daemon: Daemon) -> None:
    real_daemon.start()
    async with await Client.connect(real_daemon.socket) as client:
        events = []
        async for event in client.request(
            "chat", {"message": "Write a very long story about a lighthouse keeper.",
                     "options": {"max_tokens": 400}},
            request_id="story",
        ):
            events.append(event)
            if len(events) == 2:
                await client.call("cancel", {"request_id": "story"})
    done = events[-1]
    assert done["type"] == "done" and done["finish_reason"] == "cancelled"
    assert done["usage"]["completion_tokens"] < 100


def test_json_events_carry_usage_and_timings(real_daemon: Daemon) -> None:
    real_daemon.start()
    result = real_daemon.hush("ask", "--json", "--max-tokens", "8", "Say hello.")
    assert result.returncode == 0, result.stderr
    done = json.loads(result.stdout.splitlines()[-1])
    assert done["type"] == "done"
    assert done["usage"]["completion_tokens"] == 8 or done["finish_reason"] == "stop"
    assert done["timings"]["first_token_ms"] > 0


def _resident_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_memory_goes_back_after_concurrent_answers(real_daemon: Daemon) -> None:
    # Eight answers at once (two workers, batches of four) need a few hundred MB of working
    # memory; once they are done the daemon returns it instead of keeping it resident.
    real_daemon.start()
    assert real_daemon.process is not None
    pid = real_daemon.process.pid
    loaded = _resident_mb(pid)

    async def chat(i: int) -> None:
        async with await Client.connect(real_daemon.socket) as client:
            async for _event in client.request(
                    "chat", {"message": f"Tell story number {i} about a lighthouse keeper.",
                             "options": {"max_tokens": 160}}):
                pass

    await asyncio.gather(*(chat(i) for i in range(8)))
    for _ in range(50):  # the trim runs right after the last batch, off the event loop
        await asyncio.sleep(0.1)
        after = _resident_mb(pid)
        if after < loaded + 150:
            break
    assert after < loaded + 150, (loaded, after)
