"""Owned background tasks: held until they end, failures logged, reachable from threads."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from hush.daemon.tasks import Tasks, own_task, own_task_threadsafe


async def test_a_failed_task_is_logged_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    # What Server.apply_retention does when the store raises: before, it stopped silently.
    async def apply_retention() -> None:
        raise OSError("disk I/O error")

    tasks: Tasks = set()
    with caplog.at_level(logging.ERROR, logger="hushd.tasks"):
        task = own_task(tasks, apply_retention(), name="Server.apply_retention")
        await asyncio.wait([task])
        await asyncio.sleep(0)  # done callbacks run on the next loop step
    assert tasks == set()
    (record,) = caplog.records
    assert "Server.apply_retention failed and is not restarted" in record.getMessage()
    assert record.exc_info is not None and "disk I/O error" in caplog.text


async def test_a_cancelled_task_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    tasks: Tasks = set()
    with caplog.at_level(logging.ERROR, logger="hushd.tasks"):
        task = own_task(tasks, asyncio.sleep(60))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0)
    assert tasks == set() and caplog.records == []


async def test_work_started_from_a_thread_is_owned_until_it_ends() -> None:
    loop = asyncio.get_running_loop()
    tasks: Tasks = set()
    started, release = asyncio.Event(), asyncio.Event()

    async def summary() -> str:
        started.set()
        await release.wait()
        return "summary"

    future = await asyncio.to_thread(own_task_threadsafe, tasks, loop, summary)
    await started.wait()
    assert len(tasks) == 1  # shutdown sees it, and can cancel it
    release.set()
    assert await asyncio.wrap_future(future) == "summary"
    await asyncio.sleep(0)
    assert tasks == set()


async def test_cancelling_from_the_thread_cancels_the_task() -> None:
    loop = asyncio.get_running_loop()
    tasks: Tasks = set()
    started = threading.Event()

    async def summary() -> str:
        started.set()
        await asyncio.sleep(60)
        return "never"

    def inbox_worker() -> bool:
        future = own_task_threadsafe(tasks, loop, summary)
        started.wait(5)
        return future.cancel()

    assert await asyncio.to_thread(inbox_worker)
    for _ in range(10):  # the cancel hops to the loop; the task then ends
        await asyncio.sleep(0)
    assert tasks == set()
