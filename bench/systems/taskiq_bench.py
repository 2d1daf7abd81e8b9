"""taskiq with taskiq-redis's ``RedisStreamBroker`` (the one its README recommends)."""

from __future__ import annotations

import time

from taskiq_redis import RedisStreamBroker

from bench.config import BENCH_REDIS_URL, QUEUE
from bench.counter import AsyncCounter
from bench.systems.base import BIN, System

broker = RedisStreamBroker(BENCH_REDIS_URL, queue_name=QUEUE)
COUNTER = AsyncCounter()


@broker.task(task_name="noop")
async def noop(target: int) -> None:
    """Do nothing but count."""
    await COUNTER.noop(target, time.time())


@broker.task(task_name="latency")
async def latency(target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    await COUNTER.latency(target, enqueued_at, time.time())


class TaskiqSystem(System):
    name = "taskiq"
    distribution = "taskiq"
    one_api = "task.kiq"
    concurrency = "100 (asyncio, `--max-async-tasks` default)"
    processes_how = "`--workers N` (its default is 2)"
    notes = ("taskiq has no bulk enqueue. Its worker command starts a parent process that "
             "supervises the N worker processes.",)

    def worker_commands(self, processes: int) -> list[list[str]]:
        return [[str(BIN / "taskiq"), "worker", f"{__name__}:broker",
                 "--workers", str(processes), "--log-level", "WARNING"]]

    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def enqueue_noop(self, target: int) -> None:
        await noop.kiq(target)

    async def enqueue_latency(self, target: int) -> None:
        await latency.kiq(target, time.time())


SYSTEM = TaskiqSystem()
