"""huey with its Redis storage (blocking reads), consumer defaults: one worker thread."""

from __future__ import annotations

import time

from huey import RedisHuey

from bench.config import BENCH_DB, QUEUE, REDIS_HOST, REDIS_PORT
from bench.counter import SyncCounter
from bench.systems.base import BIN, System, repeat

huey = RedisHuey(QUEUE, host=REDIS_HOST, port=REDIS_PORT, db=BENCH_DB)
COUNTER = SyncCounter()


@huey.task()  # type: ignore[untyped-decorator]
def noop(target: int) -> None:
    """Do nothing but count."""
    COUNTER.noop(target, time.time())


@huey.task()  # type: ignore[untyped-decorator]
def latency(target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    COUNTER.latency(target, enqueued_at, time.time())


class HueySystem(System):
    name = "huey"
    distribution = "huey"
    one_api = "task(...)"
    concurrency = "1 thread (`-w 1 -k thread` default)"
    notes = ("huey has no bulk enqueue.",)

    def worker_commands(self, processes: int) -> list[list[str]]:
        return repeat([str(BIN / "huey_consumer"), f"{__name__}.huey", "--quiet"], processes)

    async def open(self) -> None:
        huey.storage.conn.ping()

    async def close(self) -> None:
        huey.storage.conn.close()

    async def enqueue_noop(self, target: int) -> None:
        noop(target)

    async def enqueue_latency(self, target: int) -> None:
        latency(target, time.time())


SYSTEM = HueySystem()
