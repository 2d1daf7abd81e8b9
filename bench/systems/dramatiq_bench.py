"""dramatiq with its Redis broker: thread-pool workers in forked processes."""

from __future__ import annotations

import time

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.config import BENCH_REDIS_URL, QUEUE
from bench.counter import SyncCounter
from bench.systems.base import BIN, System

broker = RedisBroker(url=BENCH_REDIS_URL)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
COUNTER = SyncCounter()


@dramatiq.actor(actor_name="noop", queue_name=QUEUE)
def noop(target: int) -> None:
    """Do nothing but count."""
    COUNTER.noop(target, time.time())


@dramatiq.actor(actor_name="latency", queue_name=QUEUE)
def latency(target: int, enqueued_at: float) -> None:
    """Record how long the job waited between its enqueue and its start."""
    COUNTER.latency(target, enqueued_at, time.time())


class DramatiqSystem(System):
    name = "dramatiq"
    distribution = "dramatiq"
    one_api = "actor.send"
    bulk_api = "group([...]).run()"
    concurrency = "8 threads (`--threads` default)"
    processes_how = "`--processes N` (its default is one per CPU)"
    notes = ("dramatiq has no bulk enqueue: `group(...).run()` enqueues its messages one "
             "by one, so the bulk column measures that loop.",)

    def worker_commands(self, processes: int) -> list[list[str]]:
        return [[str(BIN / "dramatiq"), __name__, "--processes", str(processes)]]

    async def open(self) -> None:
        broker.client.ping()

    async def close(self) -> None:
        broker.close()

    async def enqueue_noop(self, target: int) -> None:
        noop.send(target)

    async def enqueue_noop_bulk(self, count: int, target: int) -> None:
        messages = [noop.message(target) for _ in range(count)]
        dramatiq.group(messages).run()  # type: ignore[no-untyped-call]

    async def enqueue_latency(self, target: int) -> None:
        latency.send(target, time.time())


SYSTEM = DramatiqSystem()
