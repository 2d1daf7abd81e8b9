"""A consumer process for the SIGKILL tests of the broker sources:
``python broker_proc.py KIND NAME LOG`` (KIND "nats": NAME the tag of NatsNames-style names;
KIND "rabbitmq": NAME a queue). Its handler writes "<key header> <deliveries>" to LOG for
each message it starts, then never finishes, so the messages it took are in flight when the
test kills it."""

from __future__ import annotations

import asyncio
import sys

import workhorse as wh
from workhorse.sources.base import Source
from workhorse.sources.nats_jetstream import NatsJetStreamSource
from workhorse.sources.rabbitmq import RabbitMQSource


def append(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line)


async def main(kind: str, url: str, stream_or_queue: str, subject: str, log: str) -> None:
    app = wh.App("memory://")

    @app.handler("hang")
    async def hang(job: wh.Job) -> None:
        await asyncio.to_thread(append, log, f"{job.headers['key']} {job.attempt}\n")
        await asyncio.Event().wait()

    source: Source
    if kind == "nats":
        source = NatsJetStreamSource(url, stream=stream_or_queue, subject=subject,
                                     durable="workers", ack_wait=1.0)
    else:
        source = RabbitMQSource(url, queue=stream_or_queue,
                                dead_letter_exchange=f"{stream_or_queue}.dlx")
    worker = wh.Worker(app, concurrency=4, schedules=False, log_runs=False)
    worker.consume(source, "hang", concurrency=4)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
