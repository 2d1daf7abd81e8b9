"""A set of named asyncio tasks that a worker owns and tears down in one place."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("workhorse")


class TaskSet:
    """Named tasks owned by one worker.

    Used instead of ``asyncio.TaskGroup`` because a worker's lifetime spans separate calls
    (``start()`` ... ``stop()``) from user code rather than one ``async with`` block, and
    one failing task must not cancel its siblings.
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Start ``coro`` as a task named ``owner:name``; unexpected errors are logged."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait for every task to end; False if some were still running after ``timeout``."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def cancel(self) -> None:
        """Cancel every task and wait until all have ended."""
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)


async def cancellable(awaitable: Awaitable[T]) -> T:
    """``await awaitable``, raising CancelledError if the task was cancelled meanwhile.

    redis-py bounds socket writes with ``asyncio.wait_for``, which on Python 3.11 returns
    normally when the task is cancelled just as the write completes: the cancellation is
    lost and a worker loop would go on forever. ``Task.cancelling()`` still counts it. Every
    redis-py call whose task may be cancelled (the Redis store, the Redis Streams source)
    goes through this.
    """
    task = asyncio.current_task()
    before = 0 if task is None else task.cancelling()
    result = await awaitable
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError
    return result
