"""A consumer process for the SIGKILL tests: ``python consumer_proc.py KIND URL NAME LOG
[SUBJECT]``.

KIND is "redis" (NAME a stream, group "g"), "postgres" (NAME a table), "nats" (NAME a stream,
SUBJECT its subject, durable "workers") or "rabbitmq" (NAME a queue). Its handler writes
"<key header> <deliveries>" to LOG for each message it starts, then never finishes, so the
messages it took are in flight when the test kills it.
"""

from __future__ import annotations

import asyncio
import sys

import workhorse as wh
from workhorse.sources.base import Source
from workhorse.sources.nats_jetstream import NatsJetStreamSource
from workhorse.sources.postgres_table import PostgresTableSource
from workhorse.sources.rabbitmq import RabbitMQSource
from workhorse.sources.redis_streams import RedisStreamSource


def append(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line)


def doomed_source(kind: str, url: str, name: str, subject: str) -> Source:
    """The source of KIND, settings short enough that what the process took comes back soon."""
    if kind == "redis":
        return RedisStreamSource(url, name, "g", "doomed", claim_idle=0.5, block=0.1)
    if kind == "postgres":
        return PostgresTableSource(url, name, lease=0.5, poll_interval=0.05)
    if kind == "nats":
        return NatsJetStreamSource(url, stream=name, subject=subject, durable="workers",
                                   ack_wait=1.0)
    return RabbitMQSource(url, queue=name, dead_letter_exchange=f"{name}.dlx")


async def main(kind: str, url: str, name: str, log: str, subject: str = "") -> None:
    app = wh.App("memory://")

    @app.handler("hang")
    async def hang(job: wh.Job) -> None:
        await asyncio.to_thread(append, log, f"{job.headers['key']} {job.attempt}\n")
        await asyncio.Event().wait()

    # Worker and consumer concurrency 4: it takes 4 messages and hangs on them.
    worker = wh.Worker(app, concurrency=4, schedules=False, log_runs=False)
    worker.consume(doomed_source(kind, url, name, subject), "hang", concurrency=4)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
