"""The app that worker processes of the fault tests run.

Every run appends "start"/"end" lines to $ATTEMPT_LOG, an append-only file outside the
store, so the tests judge what happened from a log the store cannot rewrite.
"""

import asyncio
import os
import time

import workhorse as wh

app = wh.App()  # $WORKHORSE_URL


def record(kind: str, job: wh.Job) -> None:
    line = f"{kind} {job.id} {job.attempt} {os.getpid()} {time.time():.6f}\n"
    fd = os.open(os.environ["ATTEMPT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.handler("work")
async def work(job: wh.Job) -> None:
    record("start", job)
    await asyncio.sleep(job.args.get("seconds", 0.05))
    record("end", job)


@app.handler("exclusive", max_concurrency=1)
async def exclusive(job: wh.Job) -> None:
    record("start", job)
    await asyncio.sleep(job.args.get("hold", 0.005))
    record("end", job)


async def tick(job: wh.Job) -> None:
    record("start", job)
    record("end", job)


# Only the schedule test wants ticks; elsewhere they would add jobs to the counts.
if os.environ.get("FAULT_TICKS"):
    app.register("tick", tick, every=0.5)
