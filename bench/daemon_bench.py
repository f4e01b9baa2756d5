"""One catalog model through the real daemon: start-up, streaming, concurrency, memory.

Starts `python -m hush.daemon --model NAME` with private socket/state/config directories and
a NOTIFY_SOCKET it binds itself, so READY=1 is timed the way systemd sees it. Then, over the
Unix socket with `hush.daemon.client.Client`:
- one client streaming a chat answer (client-side time to first token and decode tok/s, and
  the daemon's own `done` timings), taking turns with straight CTranslate2 in this process
  (same model, same thread count, same prompt): the daemon's overhead;
- time to first token with a long system prompt, new and then cached;
- 1, 2, 4 and 8 clients at once, each on its own connection (aggregate and per-client tok/s,
  p50/p99 time to first token);
- the daemon's peak RSS (VmHWM) after all of it, and `status` (the thread settings it chose).

    .venv/bin/python -m bench.daemon_bench --model smollm2-135m [--tokens 128]
Writes bench/results/daemon-<model>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hush.daemon.client import Client
from hush.daemon.engine.generator import Engine
from hush.daemon.paths import CacheLayout

from . import common
from .engine_bench import VARIED_PROMPTS, RawCT2, best, decode_rate


@dataclass
class Hushd:
    process: subprocess.Popen[bytes]
    socket: Path
    ready_s: float
    log: Path


@contextlib.contextmanager
def hushd(model: str, timeout: float = 120.0) -> Iterator[Hushd]:
    root = Path(tempfile.mkdtemp(prefix="hush-bench-", dir="/tmp"))
    try:
        for sub in ("run", "state", "config"):
            (root / sub).mkdir(mode=0o700)
        notify_path = root / "notify"
        env = dict(os.environ, HUSH_SOCKET=str(root / "run" / "hushd.sock"),
                   HUSH_STATE_DIR=str(root / "state"), HUSH_CONFIG_DIR=str(root / "config"),
                   HUSH_CACHE_DIR=str(CacheLayout.default().root), NOTIFY_SOCKET=str(notify_path))
        log = root / "hushd.log"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(1.0)
            with log.open("ab") as err:
                start = time.monotonic()
                process = subprocess.Popen([sys.executable, "-m", "hush.daemon", "--model", model],
                                           env=env, stderr=err, stdout=subprocess.DEVNULL)
            ready = None
            while ready is None and time.monotonic() - start < timeout:
                if process.poll() is not None:
                    raise RuntimeError(f"hushd exited with {process.returncode}:\n"
                                       f"{log.read_text(errors='replace')}")
                with contextlib.suppress(TimeoutError):
                    if b"READY=1" in notify.recv(4096).split(b"\n"):
                        ready = time.monotonic() - start
            if ready is None:
                process.kill()
                raise RuntimeError(f"hushd sent no READY=1 within {timeout} s")
        try:
            yield Hushd(process, Path(env["HUSH_SOCKET"]), ready, log)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def chat_once(client: Client, message: str, tokens: int, sent: float) -> dict[str, Any]:
    """One chat request; times measured at the client from `sent`."""
    first = last = None
    done: dict[str, Any] = {}
    async for event in client.request("chat", {"message": message, "system": common.SYSTEM,
                                                "options": {"max_tokens": tokens}}):
        now = time.monotonic()
        if event["type"] == "token":
            first = first or now
            last = now
        elif event["type"] == "done":
            done = dict(event)
    end = time.monotonic()
    n = int(done.get("usage", {}).get("completion_tokens", 0))
    first = first or end
    last = last or end
    span = last - first
    return {"tokens": n, "sent": sent, "first": first, "end": end,
            "first_token_ms": round(1000 * (first - sent), 1),
            "decode_tok_s": round((n - 1) / span, 2) if n > 1 and span > 0 else 0.0,
            "server": done.get("timings", {})}


async def one_chat(path: Path, message: str, tokens: int) -> dict[str, Any]:
    async with await Client.connect(path) as client:
        return await chat_once(client, message, tokens, time.monotonic())


async def concurrent(path: Path, clients: int, tokens: int) -> dict[str, Any]:
    """`clients` connections, opened first, then all asking at the same moment: the best case
    for the scheduler's batching (requests that arrive while a batch decodes wait for it)."""
    connections = [await Client.connect(path) for _ in range(clients)]
    try:
        start = time.monotonic()
        runs = await asyncio.gather(*(
            chat_once(c, VARIED_PROMPTS[i % len(VARIED_PROMPTS)], tokens, start)
            for i, c in enumerate(connections)))
    finally:
        for c in connections:
            await c.close()
    wall = max(r["end"] for r in runs) - start
    total = sum(r["tokens"] for r in runs)
    firsts = [r["first_token_ms"] for r in runs]
    return {
        "clients": clients, "tokens": total, "wall_s": round(wall, 2),
        "aggregate_tok_s": round(total / wall, 2),
        "per_client_decode_tok_s": round(sum(r["decode_tok_s"] for r in runs) / clients, 2),
        "first_token_p50_ms": common.percentile(firsts, 0.50),
        "first_token_p99_ms": common.percentile(firsts, 0.99),
        "batch_sizes": sorted(r["server"].get("batch_size", 0) for r in runs),
    }


async def system_prompt_cache(path: Path, repeat: int) -> dict[str, Any]:
    """Time to first token (the daemon's own figure) with a long system prompt: the first
    request with it computes it, later ones with another question reuse its cached state."""
    async def first_token_ms(system: str, message: str) -> float:
        async with await Client.connect(path) as client:
            async for event in client.request("chat", {"message": message, "system": system,
                                                        "options": {"max_tokens": 2}}):
                if event["type"] == "done":
                    return float(event["timings"]["first_token_ms"])
        raise RuntimeError("no done event")

    uncached, cached = [], []
    for n in range(repeat):
        # A system prompt the daemon has never seen (the number changes it) ...
        system = f"Session {n}. {common.LONG_SYSTEM}"
        uncached.append(await first_token_ms(system, common.DECODE_PROMPT))
        # ... then the same one with another question.
        cached.append(await first_token_ms(system, "Which soil suits tomatoes best?"))
    return {"uncached_first_token_ms": min(uncached), "cached_first_token_ms": min(cached)}


async def drive(daemon: Hushd, model_dir: Path, tokens: int, repeat: int, levels: list[int]
                ) -> dict[str, Any]:
    async with await Client.connect(daemon.socket) as client:
        status = await client.call("status")
    await one_chat(daemon.socket, "Say hello.", 8)  # warm-up
    # The daemon and straight CTranslate2 in this process take turns, with the thread count
    # the daemon chose: the overhead ratio compares runs seconds apart, not minutes.
    straight = Engine.load(model_dir, intra_threads=int(status.get("intra_threads") or 1))
    try:
        raw = RawCT2(straight)
        ids = straight.prompt_ids(common.chat(common.DECODE_PROMPT))
        raw.run(ids, 8)
        singles, directs = [], []
        for _ in range(repeat):
            singles.append(await one_chat(daemon.socket, common.DECODE_PROMPT, tokens))
            directs.append(raw.run(ids, tokens))
    finally:
        straight.close()
    single = max(singles, key=lambda r: float(r["decode_tok_s"]))
    direct = round(decode_rate(best(directs)), 2)
    print(f"  daemon single stream: {single['decode_tok_s']} tok/s (straight CTranslate2 "
          f"{direct}), first token {single['first_token_ms']} ms (server {single['server']})",
          flush=True)
    single_peak = common.peak_rss_mb(daemon.process.pid)
    cache = await system_prompt_cache(daemon.socket, repeat)
    print(f"  system prompt through hushd: {cache}", flush=True)
    levels_out = {}
    for clients in levels:
        levels_out[str(clients)] = await concurrent(daemon.socket, clients, tokens)
        print(f"  {clients} clients: {levels_out[str(clients)]}", flush=True)
    return {
        "status": {k: status.get(k) for k in ("intra_threads", "decode_workers", "model")},
        "single": {k: single[k] for k in ("tokens", "first_token_ms", "decode_tok_s", "server")},
        "straight_ct2_decode_tok_s": direct,
        "single_stream_peak_rss_mb": round(single_peak, 1),
        "system_prompt": cache,
        "concurrency": levels_out,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--clients", default="1,2,4,8")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",") if c]
    model_dir = CacheLayout.default().models / args.model
    with hushd(args.model) as daemon:
        idle_rss = common.rss_mb(daemon.process.pid)
        print(f"{args.model}: READY=1 after {daemon.ready_s:.2f} s, RSS {idle_rss:.0f} MB",
              flush=True)
        result = asyncio.run(drive(daemon, model_dir, args.tokens, args.repeat, levels))
        result.update({
            "model": args.model,
            "ready_s": round(daemon.ready_s, 3),
            "idle_rss_mb": round(idle_rss, 1),
            "peak_rss_mb": round(common.peak_rss_mb(daemon.process.pid), 1),
            "model_bin_mb": round((model_dir / "model.bin").stat().st_size / 1e6, 1),
            "model_dir_mb": round(sum(p.stat().st_size for p in model_dir.iterdir()) / 1e6, 1),
            "settings": {"new_tokens": args.tokens, "repeat": args.repeat},
        })
    print(f"results: {common.write_result(f'daemon-{args.model}', result)}")


if __name__ == "__main__":
    main()
