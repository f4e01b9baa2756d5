"""Many clients at once against the real daemon process (tiny model)."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hush.daemon import scheduler as scheduler_module
from hush.daemon.client import Client, RequestFailed
from hush.daemon.engine.generator import Engine, GenerationOptions, Prompt
from hush.daemon.models import ModelHolder
from hush.daemon.scheduler import GenerationStats, Scheduler

from .conftest import Daemon, RawConnection


async def _chat(path: object, message: str, max_tokens: int) -> tuple[str, dict[str, object]]:
    async with await Client.connect(path) as client:  # type: ignore[arg-type]
        text = []
        async for event in client.request(
            "chat", {"message": message, "options": {"max_tokens": max_tokens}}
        ):
            if event["type"] == "token":
                text.append(event["text"])
            else:
                return "".join(text), dict(event)
    raise AssertionError("no done event")


async def test_fifty_concurrent_clients_get_whole_streams(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    # Greedy output depends only on the prompt, so each client can check its own stream
    # against the answer it gets alone: a token from another stream would show.
    prompts = [f"client {i % 5}" for i in range(50)]
    alone = {p: await _chat(tiny_daemon.socket, p, 24) for p in set(prompts)}
    results = await asyncio.gather(*(_chat(tiny_daemon.socket, p, 24) for p in prompts))
    for prompt, (text, done) in zip(prompts, results, strict=True):
        assert done["type"] == "done"
        assert text == alone[prompt][0], prompt
    # Fifty clients at once on two workers: some of them must have shared a batch.
    assert max(d["timings"]["batch_size"] for _t, d in results) > 1


async def test_slow_reader_does_not_block_others(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    slow = RawConnection(tiny_daemon.socket)
    slow.hello()
    slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    slow.send(b'{"id":"s","method":"chat","params":{"message":"go","options":'
              b'{"max_tokens":3000}}}\n')
    # The slow client never reads; another client is answered meanwhile.
    _text, done = await asyncio.wait_for(_chat(tiny_daemon.socket, "quick", 8), 30)
    assert done["type"] == "done"
    slow.close()


def test_killed_client_frees_its_generation(tiny_daemon: Daemon) -> None:
    tiny_daemon.start()
    script = textwrap.dedent(f"""
        import socket, sys
        s = socket.socket(socket.AF_UNIX)
        s.connect({str(tiny_daemon.socket)!r})
        s.sendall(b'{{"type":"hello","protocol":1}}\\n')
        s.sendall(b'{{"id":"k","method":"chat","params":{{"message":"go",'
                  b'"options":{{"max_tokens":20000}}}}}}\\n')
        f = s.makefile("rb")
        f.readline(); f.readline()  # hello, first token: generation is under way
        print("streaming", flush=True)
        import time; time.sleep(600)
    """)
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                          text=True) as client:
        assert client.stdout is not None and client.stdout.readline().strip() == "streaming"
        assert _status(tiny_daemon)["generating"] == 1
        client.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status = _status(tiny_daemon)
        if status["generating"] == 0 and status["connections"] == 1:  # just us
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"generation still running after the client died: {status}")


def _status(daemon: Daemon) -> dict[str, int]:
    result = daemon.hush("status", "--json")
    assert result.returncode == 0, result.stderr
    value: dict[str, int] = json.loads(result.stdout)
    return value


async def test_full_queue_answers_busy(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text(
        "decode_workers: 1\nmax_batch: 1\nlimits:\n  max_queued: 1\n"
    )
    tiny_daemon.start()
    long = {"message": "go", "options": {"max_tokens": 20000}}
    async with await Client.connect(tiny_daemon.socket) as client:
        running = client.request("chat", long, request_id="a")
        await running.__anext__()  # decoding
        queued = asyncio.create_task(_drain(client, "b", long))
        await asyncio.sleep(0.3)
        try:
            await _drain(client, "c", long)
        except RequestFailed as exc:
            assert exc.code == "busy" and "limit 1" in exc.message
        else:
            raise AssertionError("a third request was accepted past the queue limit")
        await client.call("cancel", {"request_id": "a"})
        await client.call("cancel", {"request_id": "b"})
        await running.aclose()
        await queued


def load_one_thread(model_dir: Path) -> Engine:
    return Engine.load(model_dir, intra_threads=1)


async def _drain(client: Client, request_id: str, params: dict[str, object]) -> None:
    async for _event in client.request("chat", params, request_id=request_id):
        pass


async def test_one_peer_cannot_starve_another(tiny_cache: Path) -> None:
    # The real scheduler and engine in-process: one worker, batches of one, so the order in
    # which waiting requests run is the scheduler's choice.
    models = ModelHolder(tiny_cache / "models", "tiny", load_one_thread, keep_alive_s=None)
    scheduler = Scheduler(models, max_queued=32, workers=1, max_batch=1)
    scheduler.start()
    order: list[str] = []

    async def run(peer: int, name: str, max_tokens: int,
                  cancel: threading.Event | None = None) -> None:
        stream = scheduler.generate(peer, [{"role": "user", "content": name}],
                                    GenerationOptions(max_tokens=max_tokens), GenerationStats(),
                                    cancel or threading.Event())
        async for _piece in stream:
            pass
        order.append(name)

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(500):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the scheduler never got there")

    stop_first = threading.Event()
    try:
        busy = asyncio.create_task(run(1, "a0", 60000, stop_first))
        await until(lambda: scheduler.active == 1)
        flood = [asyncio.create_task(run(1, f"a{i}", 2)) for i in range(1, 6)]
        await until(lambda: scheduler.waiting == 5)
        other = asyncio.create_task(run(2, "b0", 2))
        await until(lambda: scheduler.waiting == 6)
        stop_first.set()
        await asyncio.gather(busy, *flood, other)
    finally:
        await scheduler.close()
        models.close()
    # Peer 2 arrived after peer 1's five waiting requests, yet runs right after the first.
    assert order.index("b0") <= 2, order


async def test_free_workers_share_the_waiting_requests(tiny_cache: Path) -> None:
    # Two workers, four requests already waiting when they start: each worker decodes two on
    # its own cores instead of the first taking all four and the second idling.
    models = ModelHolder(tiny_cache / "models", "tiny", load_one_thread, keep_alive_s=None)
    scheduler = Scheduler(models, max_queued=32, workers=2, max_batch=8)
    stats = [GenerationStats() for _ in range(4)]

    async def run(i: int) -> str:
        stream = scheduler.generate(i, [{"role": "user", "content": f"client {i}"}],
                                    GenerationOptions(max_tokens=8), stats[i],
                                    threading.Event())
        return "".join([piece async for piece in stream])

    try:
        runs = [asyncio.create_task(run(i)) for i in range(4)]
        for _ in range(500):
            if scheduler.waiting == 4:
                break
            await asyncio.sleep(0.01)
        assert scheduler.waiting == 4
        scheduler.start()
        texts = await asyncio.gather(*runs)
    finally:
        await scheduler.close()
        models.close()
    assert all(texts)
    assert sorted(s.batch_size for s in stats) == [2, 2, 2, 2]


async def test_requests_sent_together_share_the_first_batches(
        tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Eight requests at once on two running workers: the ones still rendering their prompt when
    # the batch window closes are waited for, so all eight start at once (4 + 4) and none waits
    # for a whole answer. The bound is raised so a slow CI machine cannot miss it.
    monkeypatch.setattr(scheduler_module, "BATCH_WINDOW_MAX_S", 10.0)
    fit_prompt = Engine.fit_prompt

    def slow_fit_prompt(self: Engine, messages: list[dict[str, str]], max_tokens: int) -> Prompt:
        time.sleep(0.2)  # a long history to render, longer than the batch window
        return fit_prompt(self, messages, max_tokens)

    monkeypatch.setattr(Engine, "fit_prompt", slow_fit_prompt)
    models = ModelHolder(tiny_cache / "models", "tiny", load_one_thread, keep_alive_s=None)
    scheduler = Scheduler(models, max_queued=32, workers=2, max_batch=8)
    scheduler.start()
    stats = [GenerationStats() for _ in range(8)]

    async def run(i: int) -> None:
        messages = [{"role": "user", "content": f"client {i}"}]
        async for _piece in scheduler.generate(i, messages, GenerationOptions(max_tokens=8),
                                               stats[i], threading.Event()):
            pass

    try:
        await asyncio.gather(*(run(i) for i in range(8)))
    finally:
        await scheduler.close()
        models.close()
    assert [s.batch_size for s in stats] == [4] * 8
