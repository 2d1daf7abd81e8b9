"""Celery with the Redis transport (kombu), its default prefork pool and no result backend."""

from __future__ import annotations

import time

from celery import Celery, group

from bench.config import BENCH_REDIS_URL
from bench.counter import SyncCounter
from bench.systems.base import BIN, System

app = Celery("bench", broker=BENCH_REDIS_URL)
# The default since Celery 5; set only to silence the warning that it will change.
app.conf.broker_connection_retry_on_startup = True
COUNTER = SyncCounter()


@app.task(name="noop")  # type: ignore[untyped-decorator]
def noop(target: int) -> None:
    """Do nothing but count."""
    COUNTER.noop(target, time.time())


@app.task(name="latency")  # type: ignore[untyped-decorator]
def latency(target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    COUNTER.latency(target, enqueued_at, time.time())


class CelerySystem(System):
    name = "celery"
    distribution = "celery"
    one_api = "task.delay"
    bulk_api = "group([...]).apply_async()"
    concurrency = "1 per prefork child (prefetch multiplier 4)"
    processes_how = "`--concurrency N` prefork children (its default is one per CPU)"
    notes = ("Celery has no bulk publish: `group(...).apply_async()` publishes its tasks one "
             "by one on one connection, so the bulk column measures that loop. One worker "
             "process means the prefork parent plus one child.",)

    def worker_commands(self, processes: int) -> list[list[str]]:
        return [[str(BIN / "celery"), "-A", f"{__name__}:app", "worker",
                 "--concurrency", str(processes), "--loglevel", "WARNING"]]

    async def open(self) -> None:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1)

    async def close(self) -> None:
        app.close()

    async def enqueue_noop(self, target: int) -> None:
        noop.delay(target)

    async def enqueue_noop_bulk(self, count: int, target: int) -> None:
        group(noop.s(target) for _ in range(count)).apply_async()

    async def enqueue_latency(self, target: int) -> None:
        latency.delay(target, time.time())


SYSTEM = CelerySystem()
