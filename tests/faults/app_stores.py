"""The app that worker processes of the store, bad-entry and schedule fault tests run.

As in faultapp, every run appends a line to $ATTEMPT_LOG, a file outside the store. With
$TICK_EVERY set, it also has an ``every=`` schedule whose jobs log "tick <job id> <attempt>
<pid> <tick>" as it starts, the tick being the job's due time: the tests judge from those
lines that each tick was enqueued once.
"""

import asyncio
import os
import time

import workhorse as wh

app = wh.App()  # $WORKHORSE_URL


def append(line: str) -> None:
    """One line at the end of $ATTEMPT_LOG (O_APPEND: whole lines from many processes)."""
    fd = os.open(os.environ["ATTEMPT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record(kind: str, job: wh.Job) -> None:
    append(f"{kind} {job.id} {job.attempt} {os.getpid()} {time.time():.6f}\n")


@app.handler("work")
async def work(job: wh.Job) -> None:
    record("start", job)
    await asyncio.sleep(job.args.get("seconds", 0.0))
    record("end", job)


async def tick(job: wh.Job) -> None:
    assert job.run_at is not None
    append(f"tick {job.id} {job.attempt} {os.getpid()} {job.run_at:.6f}\n")
    # Held a while ($TICK_HOLD seconds), so that a worker killed mid-tick holds one.
    await asyncio.sleep(float(os.environ.get("TICK_HOLD", "0")))


if os.environ.get("TICK_EVERY"):
    app.register("tick", tick, every=float(os.environ["TICK_EVERY"]))
