"""The hand-over shared by every backend's result feed: finished jobs pushed by a listener
(a task, a thread or a store's move) and taken in batches by one consumer on its loop."""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Awaitable, Callable

from workhorse.backends.base import FinishedJob


class FeedQueue:
    """An unbounded queue of FinishedJob from any thread to the loop that made it.

    Unbounded because its one consumer (the runtime's fan-out) only moves items into the
    subscribers' bounded buffers, where the drop policy applies. ``stop`` is awaited once by
    ``close``, to end the backend's listener.
    """

    def __init__(self, stop: Callable[[], Awaitable[None]] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._lock = threading.Lock()
        self._items: collections.deque[FinishedJob] = collections.deque()
        self._ready = asyncio.Event()
        self._stop = stop
        self._closed = False
        self._told = 0

    @property
    def active(self) -> bool:
        return not self._closed

    @property
    def told(self) -> int:
        return self._told

    def push(self, jobs: list[FinishedJob]) -> None:
        """Hand ``jobs`` to the consumer; from any thread, never blocks."""
        if not jobs or self._closed:
            return
        if self._loop.is_closed():  # its loop ended without closing it: nobody will read
            self._closed = True
            return
        with self._lock:
            self._items.extend(jobs)
            self._told += len(jobs)
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._ready.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._ready.set)

    async def next(self) -> list[FinishedJob]:
        while True:
            with self._lock:
                if self._items or self._closed:
                    items = list(self._items)
                    self._items.clear()
                    self._ready.clear()
                    return [] if self._closed else items
            await self._ready.wait()
            self._ready.clear()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._ready.set()
        if self._stop is not None:
            await self._stop()


class QueuedFeed:
    """What the three server and file feeds share: the ``ResultFeed`` calls over a FeedQueue
    that their listener fills. A subclass ends its listener in ``_stop`` (called once, by
    ``close``) and says in ``active`` whether that listener still runs."""

    def __init__(self) -> None:
        self._queue = FeedQueue(self._stop)

    @property
    def told(self) -> int:
        return self._queue.told

    async def next(self) -> list[FinishedJob]:
        return await self._queue.next()

    async def close(self) -> None:
        await self._queue.close()

    async def _stop(self) -> None:
        raise NotImplementedError
