"""Background tasks the daemon owns: kept until they end, cancelled at shutdown, never lost.

A task nobody awaits hides its exception until it is garbage collected, if then: a retention
loop that raised would stop without a word. Owned tasks are held in a set (asyncio keeps only
weak references), and one that fails is logged with its traceback.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

log = logging.getLogger("hushd.tasks")

T = TypeVar("T")

Tasks = set[asyncio.Task[Any]]


def own_task(tasks: Tasks, coro: Coroutine[Any, Any, T], *, name: str | None = None,
             report: bool = True) -> asyncio.Task[T]:
    """Run `coro` as a task held in `tasks` until it ends.

    Args:
        report: log the task's failure; False when someone awaits its result instead.
    """
    task = asyncio.create_task(coro, name=name)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    if report:
        task.add_done_callback(_report_failure)
    return task


def own_task_threadsafe(tasks: Tasks, loop: asyncio.AbstractEventLoop,
                        work: Callable[[], Coroutine[Any, Any, T]]
                        ) -> concurrent.futures.Future[T]:
    """From another thread: run `work()` on `loop` as a task held in `tasks`. The returned
    future holds its result or exception (the caller reports it), and cancelling it cancels
    the task. `work` is called on the loop, so a task cancelled before it starts leaves no
    coroutine unawaited."""

    async def owned() -> T:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return await work()

    return asyncio.run_coroutine_threadsafe(owned(), loop)


def _report_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("background task %s failed and is not restarted", task.get_name(),
                  exc_info=exc)
