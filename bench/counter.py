"""How benchmark jobs count themselves, so the driver sees completion without polling.

Every job, whatever the library, calls one of these counters: ``INCR`` on a counter key;
the first job stores its start time, the job that reaches the target ``RPUSH``es its end
time, and the driver waits for that with a blocking ``BLPOP``. That is one Redis round trip
per job (two for the first and the last), the same for every system measured. In-process
(``memory://``) jobs count in memory and set an ``asyncio.Event`` instead.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from bench.config import BENCH_REDIS_URL, COUNT_KEY, DONE_KEY, FIRST_KEY, LATENCY_KEY


class SyncCounter:
    """The counter for jobs run in threads or processes (rq, celery, dramatiq, huey).

    ``client`` gives the Redis client to use; by default one per process, opened on first
    use (after any fork, since a worker may fork after importing the task module).
    """

    def __init__(self, client: Callable[[], redis.Redis] | None = None) -> None:
        self._client_factory = client
        self._client: redis.Redis | None = None
        self._pid = 0

    def _redis(self) -> redis.Redis:
        if self._client_factory is not None:
            return self._client_factory()
        if self._client is None or self._pid != os.getpid():
            self._client = redis.Redis.from_url(BENCH_REDIS_URL)
            self._pid = os.getpid()
        return self._client

    def noop(self, target: int, started: float) -> None:
        """Count a no-op job that started at ``started`` (epoch seconds)."""
        client = self._redis()
        count = cast(int, client.incr(COUNT_KEY))
        self._settle(client, count, target, started)

    def latency(self, target: int, enqueued_at: float, started: float) -> None:
        """Record a latency job's pickup latency (``started - enqueued_at``) and count it."""
        client = self._redis()
        pipe = client.pipeline(transaction=False)
        pipe.rpush(LATENCY_KEY, repr(started - enqueued_at))
        pipe.incr(COUNT_KEY)
        _, count = pipe.execute()
        self._settle(client, int(count), target, started)

    @staticmethod
    def _settle(client: redis.Redis, count: int, target: int, started: float) -> None:
        if count == 1:
            client.set(FIRST_KEY, repr(started))
        if count == target:
            client.rpush(DONE_KEY, repr(time.time()))


class AsyncCounter:
    """The counter for asyncio workers (workhorse, arq, saq, taskiq): one client per loop."""

    def __init__(self) -> None:
        self._client: aioredis.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _redis(self) -> aioredis.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = aioredis.Redis.from_url(BENCH_REDIS_URL)
            self._loop = loop
        return self._client

    async def noop(self, target: int, started: float) -> None:
        """Count a no-op job that started at ``started`` (epoch seconds)."""
        client = self._redis()
        count: int = await client.incr(COUNT_KEY)
        await self._settle(client, count, target, started)

    async def latency(self, target: int, enqueued_at: float, started: float) -> None:
        """Record a latency job's pickup latency (``started - enqueued_at``) and count it."""
        client = self._redis()
        pipe = client.pipeline(transaction=False)
        pipe.rpush(LATENCY_KEY, repr(started - enqueued_at))
        pipe.incr(COUNT_KEY)
        _, count = await pipe.execute()
        await self._settle(client, int(count), target, started)

    @staticmethod
    async def _settle(client: aioredis.Redis, count: int, target: int, started: float) -> None:
        if count == 1:
            await client.set(FIRST_KEY, repr(started))
        if count == target:
            # redis-py types RPUSH's reply as sync-or-async whichever the client.
            await cast(Awaitable[int], client.rpush(DONE_KEY, repr(time.time())))


class LocalCounter:
    """The in-process counter (``memory://``): the same bookkeeping, and an Event."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every count (between a warm-up job and the measured ones)."""
        self.count = 0
        self.first: float | None = None
        self.done_at: float | None = None
        self.latencies: list[float] = []
        self.done = asyncio.Event()

    async def noop(self, target: int, started: float) -> None:
        """Count a no-op job that started at ``started`` (epoch seconds)."""
        self._settle(target, started)

    async def latency(self, target: int, enqueued_at: float, started: float) -> None:
        """Record a latency job's pickup latency and count it."""
        self.latencies.append(started - enqueued_at)
        self._settle(target, started)

    def _settle(self, target: int, started: float) -> None:
        self.count += 1
        if self.count == 1:
            self.first = started
        if self.count == target:
            self.done_at = time.time()
            self.done.set()

    def summary(self) -> dict[str, Any]:
        """What the driver would have read from Redis."""
        return {"count": self.count, "first": self.first, "done": self.done_at,
                "latencies": list(self.latencies)}
