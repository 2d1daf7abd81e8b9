"""saq: asyncio jobs on Redis (its PostgreSQL queue is `saq_postgres_bench`)."""

from __future__ import annotations

import time
from typing import Any

from saq import Queue

from bench.config import BENCH_REDIS_URL, QUEUE
from bench.counter import AsyncCounter
from bench.systems.base import BIN, System, repeat

COUNTER = AsyncCounter()
queue = Queue.from_url(BENCH_REDIS_URL, name=QUEUE)


async def noop(ctx: Any, *, target: int) -> None:
    """Do nothing but count."""
    await COUNTER.noop(target, time.time())


async def latency(ctx: Any, *, target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    await COUNTER.latency(target, enqueued_at, time.time())


#: What ``saq bench.systems.saq_bench.settings`` runs: library defaults otherwise.
settings = {"queue": queue, "functions": [noop, latency]}


class SaqSystem(System):
    name = "saq"
    distribution = "saq"
    one_api = "Queue.enqueue"
    concurrency = "10 (asyncio, `concurrency` default)"
    notes = ("saq has no bulk enqueue (`Queue.map` enqueues one by one and waits for the "
             "results).",)

    #: The queue enqueued to, and the module whose ``settings`` the worker runs.
    queue: Any = queue
    settings_module = __name__

    def worker_commands(self, processes: int) -> list[list[str]]:
        return repeat([str(BIN / "saq"), f"{self.settings_module}.settings"], processes)

    async def open(self) -> None:
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue_noop(self, target: int) -> None:
        await self.queue.enqueue("noop", target=target)

    async def enqueue_latency(self, target: int) -> None:
        await self.queue.enqueue("latency", target=target, enqueued_at=time.time())


SYSTEM = SaqSystem()
