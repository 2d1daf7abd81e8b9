"""saq on its PostgreSQL queue (``saq.queue.postgres.PostgresQueue``, psycopg 3).

The same tasks and worker command as ``saq_bench``, on a queue in a database of its own
(``bench.config.SAQ_POSTGRES_DATABASE``), emptied between runs; saq creates its tables
when a queue first connects.
"""

from __future__ import annotations

import time

import redis
from saq.queue.postgres import PostgresQueue

from bench import pg
from bench.config import QUEUE, SAQ_POSTGRES_DATABASE
from bench.systems.base import BIN, System, repeat

# The same tasks as saq on Redis: only the queue differs.
from bench.systems.saq_bench import latency, noop

queue = PostgresQueue.from_url(pg.dsn(SAQ_POSTGRES_DATABASE), name=QUEUE)


#: What ``saq bench.systems.saq_postgres_bench.settings`` runs: library defaults otherwise.
settings = {"queue": queue, "functions": [noop, latency]}


class SaqPostgresSystem(System):
    name = "saq-postgres"
    distribution = "saq"
    redis_based = False
    one_api = "PostgresQueue.enqueue"
    concurrency = "10 (asyncio, `concurrency` default)"
    notes = ("saq-postgres is saq's `PostgresQueue` (a database of its own on the same "
             "server); like saq on Redis it has no bulk enqueue.",)

    def worker_commands(self, processes: int) -> list[list[str]]:
        return repeat([str(BIN / "saq"), f"{__name__}.settings"], processes)

    def flush(self, bench_redis: redis.Redis) -> None:
        pg.reset_database(SAQ_POSTGRES_DATABASE)

    async def open(self) -> None:
        await queue.connect()

    async def close(self) -> None:
        await queue.disconnect()

    async def enqueue_noop(self, target: int) -> None:
        await queue.enqueue("noop", target=target)

    async def enqueue_latency(self, target: int) -> None:
        await queue.enqueue("latency", target=target, enqueued_at=time.time())


SYSTEM = SaqPostgresSystem()
