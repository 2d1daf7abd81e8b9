"""arq: asyncio jobs on Redis; its worker polls the queue every ``poll_delay`` (0.5 s)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.config import BENCH_DB, REDIS_HOST, REDIS_PORT
from bench.counter import AsyncCounter
from bench.systems.base import BIN, System, repeat

REDIS_SETTINGS = RedisSettings(host=REDIS_HOST, port=REDIS_PORT, database=BENCH_DB)
COUNTER = AsyncCounter()


async def noop(ctx: dict[str, Any], target: int) -> None:
    """Do nothing but count."""
    await COUNTER.noop(target, time.time())


async def latency(ctx: dict[str, Any], target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    await COUNTER.latency(target, enqueued_at, time.time())


class WorkerSettings:
    """What ``arq bench.systems.arq_bench.WorkerSettings`` runs: library defaults otherwise."""

    functions: ClassVar[list[Any]] = [noop, latency]
    redis_settings = REDIS_SETTINGS


class ArqSystem(System):
    name = "arq"
    distribution = "arq"
    one_api = "ArqRedis.enqueue_job"
    concurrency = "10 (asyncio, `max_jobs` default)"
    notes = ("arq has no bulk enqueue. Its worker polls Redis every `poll_delay` "
             "(0.5 s by default) when idle, which sets its pickup latency, and it logs "
             "every job at INFO (its CLI has no quieter option).",)

    def __init__(self) -> None:
        self._pool: ArqRedis | None = None

    def worker_commands(self, processes: int) -> list[list[str]]:
        return repeat([str(BIN / "arq"), f"{__name__}.WorkerSettings"], processes)

    async def open(self) -> None:
        self._pool = await create_pool(REDIS_SETTINGS)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()

    def _p(self) -> ArqRedis:
        assert self._pool is not None, "open() first"
        return self._pool

    async def enqueue_noop(self, target: int) -> None:
        await self._p().enqueue_job("noop", target)

    async def enqueue_latency(self, target: int) -> None:
        await self._p().enqueue_job("latency", target, time.time())


SYSTEM = ArqSystem()
