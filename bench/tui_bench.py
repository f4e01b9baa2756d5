"""TUI CPU use while an answer streams at the model's full speed: batched vs per-token render.

Runs the real app headless (Textual's test driver, no terminal I/O) against a real hushd and
measures this process's CPU time per second of streaming, once with the app as shipped
(Markdown.get_stream batches fragments) and once re-rendering the whole message per token, the
way a naive client would. Writes bench/results/tui.json.

    .venv/bin/python bench/tui_bench.py [--model smollm2-135m] [--tokens 400]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hush.daemon.client import Client
from hush.tui.app import HushApp

RESULTS = Path(__file__).parent / "results"
PROMPT = "Write a long story about a lighthouse keeper and the sea."


async def _stream(app: HushApp, tokens: int, naive: bool) -> dict[str, float]:
    async with app.run_test(size=(120, 40)) as pilot:
        while app.status.connection != "connected":
            await pilot.pause(0.05)
        view = await app.chat.add_message("assistant")
        text: list[str] = []
        cpu0, wall0, count = time.process_time(), time.monotonic(), 0
        stream = None if naive else view.get_stream(view)
        async with await Client.connect(app.session.socket) as client:
            async for event in client.request("chat", {"message": PROMPT,
                                                       "options": {"max_tokens": tokens}}):
                if event["type"] != "token":
                    continue
                count += 1
                if stream is None:
                    text.append(event["text"])
                    await view.update("".join(text))  # whole message, every token
                else:
                    await stream.write(event["text"])
            if stream is not None:
                await stream.stop()
        await pilot.pause()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    return {"tokens": count, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "cpu_percent": round(100 * cpu / wall, 1), "tokens_per_s": round(count / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=400)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hush-bench-", dir="/tmp"))
    env = dict(os.environ, HUSH_SOCKET=str(work / "s.sock"), HUSH_STATE_DIR=str(work / "state"),
               HUSH_CONFIG_DIR=str(work / "config"))
    daemon = subprocess.Popen([sys.executable, "-m", "hush.daemon", "--model", args.model],
                              env=env, stderr=subprocess.DEVNULL)
    try:
        subprocess.run([sys.executable, "-m", "hush.tui.cli", "status", "--wait", "120"],
                       env=env, check=True, capture_output=True)
        results: dict[str, Any] = {"model": args.model}
        for name, naive in (("batched", False), ("per_token", True)):
            app = HushApp(work / "s.sock")
            results[name] = asyncio.run(_stream(app, args.tokens, naive))
        results["cpu_ratio_per_token_over_batched"] = round(
            results["per_token"]["cpu_s"] / max(results["batched"]["cpu_s"], 1e-6), 2)
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "tui.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
