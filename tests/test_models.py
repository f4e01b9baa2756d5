"""Which model the daemon serves: listing, switching, lazy load and idle unload."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from hush.daemon.client import Client, RequestFailed

from .conftest import Daemon


def _second_model(daemon: Daemon) -> None:
    models = daemon.cache_dir / "models"
    if not (models / "tiny2").exists():
        shutil.copytree(models / daemon.model, models / "tiny2")


async def test_models_list_and_use(tiny_daemon: Daemon) -> None:
    _second_model(tiny_daemon)
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        listed = (await client.call("models.list"))["models"]
        by_name = {m["name"]: m for m in listed}
        assert by_name["tiny"]["active"] and not by_name["tiny2"]["active"]
        assert by_name["tiny"]["chat_template"] is True
        assert by_name["tiny"]["size_bytes"] > 0
        result = await client.call("models.use", {"name": "tiny2"})
        assert result["model"] == "tiny2"
        assert (await client.call("status"))["model"] == "tiny2"
        events = [e async for e in client.request("chat", {"message": "hi",
                                                            "options": {"max_tokens": 3}})]
        assert events[-1]["type"] == "done"
        with pytest.raises(RequestFailed) as info:
            await client.call("models.use", {"name": "nope"})
        assert info.value.code == "model" and "hush model pull nope" in info.value.message
        assert (await client.call("status"))["model"] == "tiny2"  # unchanged by the failure


async def test_switching_model_lets_running_generation_finish(tiny_daemon: Daemon) -> None:
    _second_model(tiny_daemon)
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        stream = client.request("chat", {"message": "go", "options": {"max_tokens": 400}},
                                request_id="long")
        await stream.__anext__()
        await client.call("models.use", {"name": "tiny2"})
        events = [e async for e in stream]
    done = events[-1]
    assert done["type"] == "done" and done["finish_reason"] in {"length", "stop"}


async def test_lazy_load_and_idle_unload(tiny_daemon: Daemon) -> None:
    (tiny_daemon.config_dir / "hushd.yaml").write_text("lazy_load: true\nkeep_alive_s: 0.5\n")
    tiny_daemon.start()
    async with await Client.connect(tiny_daemon.socket) as client:
        assert (await client.call("status"))["model_loaded"] is False
        events = [e async for e in client.request("chat", {"message": "hi",
                                                            "options": {"max_tokens": 2}})]
        assert events[-1]["type"] == "done"
        assert (await client.call("status"))["model_loaded"] is True
        deadline = time.monotonic() + 10
        while (await client.call("status"))["model_loaded"]:
            assert time.monotonic() < deadline, "the idle model was never unloaded"
            await asyncio.sleep(0.1)
        # And it comes back on the next request.
        events = [e async for e in client.request("chat", {"message": "hi",
                                                            "options": {"max_tokens": 2}})]
        assert events[-1]["type"] == "done"
