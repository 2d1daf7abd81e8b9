"""workhorse on each of its stores: memory (in one process), SQLite, Redis and PostgreSQL.

The worker is the documented command, ``workhorse worker bench.systems.workhorse_bench:app``,
with its default concurrency; the store comes from ``$WORKHORSE_URL``, which the driver sets.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis

import workhorse as wh
from bench.config import (
    ENV_COUNTER,
    ENV_WORKHORSE_URL,
    POSTGRES_DSN,
    REDIS_HOST,
    REDIS_PORT,
    WORKHORSE_POSTGRES_SCHEMA,
    WORKHORSE_POSTGRES_URL,
    WORKHORSE_REDIS_NAMESPACE,
    WORKHORSE_REDIS_URL,
)
from bench.counter import AsyncCounter, LocalCounter
from bench.systems.base import BIN, System, repeat

#: Jobs report to the driver's tally, except in the in-process (memory://) producer, which
#: counts locally.
COUNTER: AsyncCounter | LocalCounter = (
    LocalCounter() if os.environ.get(ENV_COUNTER) == "local" else AsyncCounter())

#: The store is chosen by $WORKHORSE_URL; nothing connects until a job is enqueued or run.
app = wh.App()


@app.handler("noop")
async def noop(job: wh.Job[dict[str, Any]]) -> None:
    """Do nothing but count."""
    await COUNTER.noop(job.args["target"], time.time())


@app.handler("latency")
async def latency(job: wh.Job[dict[str, Any]]) -> None:
    """Record how long the job waited between its enqueue and its start."""
    await COUNTER.latency(job.args["target"], job.args["enqueued_at"], time.time())


class WorkhorseSystem(System):
    """workhorse on one store: ``memory``, ``sqlite``, ``redis`` or ``postgres``."""

    distribution = "workhorse"
    one_api = "await app.enqueue(...)"
    bulk_api = "await app.enqueue_many([...])"
    concurrency = "10 (asyncio, `-c` default)"

    def __init__(self, store: str, workdir: Path) -> None:
        self.store = store
        self.name = f"workhorse-{store}"
        self.redis_based = store == "redis"
        self.in_process = store == "memory"
        self.sqlite_path = workdir / "bench.db"
        self.url = {
            "memory": "memory://",
            # An absolute path after "sqlite:///" makes the four slashes of an absolute URL.
            "sqlite": "sqlite:///" + str(self.sqlite_path),
            "redis": WORKHORSE_REDIS_URL,
            "postgres": WORKHORSE_POSTGRES_URL,
        }[store]
        if self.in_process:
            self.processes_how = "n/a: a memory:// store lives in one process"
            self.notes = ("memory:// cannot be shared between processes, so its producer "
                          "and its worker (`wh.Worker(app)`, default concurrency) run in "
                          "the same process.",)

    # -- driver side --------------------------------------------------------------------------

    def worker_commands(self, processes: int) -> list[list[str]]:
        # --log-level WARNING, like the other systems' workers: no per-job INFO line.
        return repeat([str(BIN / "workhorse"), "worker", f"{__name__}:app",
                       "--log-level", "WARNING"], processes)

    def worker_env(self) -> dict[str, str]:
        env = {ENV_WORKHORSE_URL: self.url}
        if self.in_process:
            env[ENV_COUNTER] = "local"
        return env

    def flush(self, bench_redis: redis.Redis) -> None:
        if self.store == "sqlite":
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(str(self.sqlite_path) + suffix).unlink(missing_ok=True)
        elif self.store == "redis":
            client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=0)
            try:
                for pattern in (f"{{{WORKHORSE_REDIS_NAMESPACE}}}*",
                                f"{WORKHORSE_REDIS_NAMESPACE}:*"):
                    keys = list(client.scan_iter(match=pattern, count=1000))
                    for start in range(0, len(keys), 1000):
                        client.delete(*keys[start:start + 1000])
            finally:
                client.close()
        elif self.store == "postgres":
            import psycopg

            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{WORKHORSE_POSTGRES_SCHEMA}" CASCADE')

    # -- producer side ------------------------------------------------------------------------

    async def open(self) -> None:
        await app.backend()

    async def close(self) -> None:
        await app.close()

    async def enqueue_noop(self, target: int) -> None:
        await app.enqueue("noop", {"target": target})

    async def enqueue_noop_bulk(self, count: int, target: int) -> None:
        await app.enqueue_many([wh.EnqueueRequest("noop", {"target": target})
                                for _ in range(count)])

    async def enqueue_latency(self, target: int) -> None:
        await app.enqueue("latency", {"target": target, "enqueued_at": time.time()})

    def local_counter(self) -> LocalCounter:
        assert isinstance(COUNTER, LocalCounter), f"{ENV_COUNTER}=local was not set"
        return COUNTER

    @contextlib.asynccontextmanager
    async def in_process_worker(self) -> AsyncIterator[None]:
        worker = wh.Worker(app)
        await worker.start()
        try:
            yield
        finally:
            await worker.stop()
