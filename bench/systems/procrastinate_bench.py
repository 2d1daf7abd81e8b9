"""procrastinate: asyncio jobs in PostgreSQL (LISTEN/NOTIFY), with its psycopg 3 connector.

Its tables live in a database of their own (``bench.config.PROCRASTINATE_DATABASE``): the
driver drops them between runs and applies procrastinate's schema again. The worker is the
documented command, ``procrastinate --app=bench.systems.procrastinate_bench.app worker``
(with ``--log-level=warning``, like the other workers), with the library's defaults otherwise.
"""

from __future__ import annotations

import time

import procrastinate
import psycopg
import redis
from procrastinate.schema import SchemaManager
from procrastinate.types import JSONDict

from bench import pg
from bench.config import PROCRASTINATE_DATABASE, QUEUE
from bench.counter import AsyncCounter
from bench.systems.base import BIN, System, repeat

COUNTER = AsyncCounter()
#: Nothing connects until ``open_async`` (the producer) or the worker command opens it.
app = procrastinate.App(connector=procrastinate.PsycopgConnector(
    conninfo=pg.dsn(PROCRASTINATE_DATABASE)))


@app.task(name="noop", queue=QUEUE)
async def noop(target: int) -> None:
    """Do nothing but count."""
    await COUNTER.noop(target, time.time())


@app.task(name="latency", queue=QUEUE)
async def latency(target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    await COUNTER.latency(target, enqueued_at, time.time())


class ProcrastinateSystem(System):
    name = "procrastinate"
    distribution = "procrastinate"
    redis_based = False
    one_api = "await task.defer_async(...)"
    bulk_api = "await task.batch_defer_async(...)"
    concurrency = "1 (asyncio, `--concurrency` default)"
    notes = ("procrastinate keeps its jobs in PostgreSQL (a database of its own on the same "
             "server); its workers wake on LISTEN/NOTIFY and run one job at a time by "
             "default.",)

    def worker_commands(self, processes: int) -> list[list[str]]:
        # It logs two INFO lines per job otherwise; every system logs at WARNING here.
        return repeat([str(BIN / "procrastinate"), f"--app={__name__}.app",
                       "--log-level=warning", "worker"], processes)

    def flush(self, bench_redis: redis.Redis) -> None:
        # An empty database with procrastinate's schema, as `procrastinate schema --apply`
        # leaves it.
        with psycopg.connect(pg.reset_database(PROCRASTINATE_DATABASE),
                             autocommit=True) as conn:
            conn.execute(SchemaManager.get_schema())

    async def open(self) -> None:
        await app.open_async()

    async def close(self) -> None:
        await app.close_async()

    async def enqueue_noop(self, target: int) -> None:
        await noop.defer_async(target=target)

    async def enqueue_noop_bulk(self, count: int, target: int) -> None:
        jobs: list[JSONDict] = [{"target": target} for _ in range(count)]
        await noop.batch_defer_async(*jobs)

    async def enqueue_latency(self, target: int) -> None:
        await latency.defer_async(target=target, enqueued_at=time.time())


SYSTEM = ProcrastinateSystem()
