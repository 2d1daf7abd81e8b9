"""A consumer process for the SIGKILL tests: ``python consumer_proc.py KIND URL NAME LOG``.

KIND is "redis" (NAME a stream, group "g") or "postgres" (NAME a table). Its handler writes
"<message id> <deliveries>" to LOG for each message it starts, then never finishes, so the
messages it took are in flight when the test kills it.
"""

from __future__ import annotations

import asyncio
import sys

import workhorse as wh
from workhorse.sources.base import Source
from workhorse.sources.postgres_table import PostgresTableSource
from workhorse.sources.redis_streams import RedisStreamSource


def append(path: str, line: str) -> None:
    with open(path, "a") as out:
        out.write(line)


async def main(kind: str, url: str, name: str, log: str) -> None:
    app = wh.App("memory://")

    @app.handler("hang")
    async def hang(job: wh.Job) -> None:
        await asyncio.to_thread(append, log, f"{job.headers['key']} {job.attempt}\n")
        await asyncio.Event().wait()

    source: Source
    if kind == "redis":
        source = RedisStreamSource(url, name, "g", "doomed", claim_idle=0.5, block=0.1)
    else:
        source = PostgresTableSource(url, name, lease=0.5, poll_interval=0.05)
    worker = wh.Worker(app, concurrency=4, schedules=False, log_runs=False)
    worker.consume(source, "hang")
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
