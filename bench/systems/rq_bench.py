"""rq: a Redis queue whose default worker forks a "work horse" process for every job."""

from __future__ import annotations

import time

import redis
from rq import Queue

from bench.config import BENCH_REDIS_URL, QUEUE
from bench.counter import SyncCounter
from bench.systems.base import BIN, System, repeat

#: Each forked work horse opens its own connection to the driver's tally.
COUNTER = SyncCounter()


def noop(target: int) -> None:
    """Do nothing but count."""
    COUNTER.noop(target, time.time())


def latency(target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    COUNTER.latency(target, enqueued_at, time.time())


class RqSystem(System):
    name = "rq"
    distribution = "rq"
    one_api = "Queue.enqueue"
    bulk_api = "Queue.enqueue_many"
    concurrency = "1 (forks a work horse per job)"
    notes = ("`rq worker --quiet` (the default Worker class, which forks per job; "
             "`--quiet` only lowers its per-job log lines to WARNING).",)

    def __init__(self) -> None:
        self._redis: redis.Redis | None = None
        self._queue: Queue | None = None

    def worker_commands(self, processes: int) -> list[list[str]]:
        return repeat([str(BIN / "rq"), "worker", "--url", BENCH_REDIS_URL, "--quiet", QUEUE],
                      processes)

    async def open(self) -> None:
        self._redis = redis.Redis.from_url(BENCH_REDIS_URL)
        self._redis.ping()
        self._queue = Queue(QUEUE, connection=self._redis)

    async def close(self) -> None:
        if self._redis is not None:
            self._redis.close()

    def _q(self) -> Queue:
        assert self._queue is not None, "open() first"
        return self._queue

    async def enqueue_noop(self, target: int) -> None:
        self._q().enqueue(noop, target)

    async def enqueue_noop_bulk(self, count: int, target: int) -> None:
        self._q().enqueue_many([Queue.prepare_data(noop, args=(target,)) for _ in range(count)])

    async def enqueue_latency(self, target: int) -> None:
        self._q().enqueue(latency, target, time.time())


SYSTEM = RqSystem()
