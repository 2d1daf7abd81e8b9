"""The app that the worker processes of test_fencing.py run.

Like faultapp, every run appends "start"/"end" lines to $ATTEMPT_LOG, outside the store; the
time on each line is the *store's* clock (``backend.now()``), read by the worker, so the
clock-skew tests compare due times with the clock that decides them. Handlers return the
worker's pid, so the stored result names the process whose run was recorded.
"""

import asyncio
import os
import time

import workhorse as wh

app = wh.App()  # $WORKHORSE_URL


async def record(kind: str, job: wh.Job) -> float:
    """Append a line for this run, stamped with the store's clock; returns that time."""
    now = await (await app.backend()).now()
    write(kind, job, now)
    return now


def write(kind: str, job: wh.Job, at: float) -> None:
    """Append a line for this run, without yielding to the event loop."""
    line = f"{kind} {job.id} {job.attempt} {os.getpid()} {at:.6f}\n"
    fd = os.open(os.environ["ATTEMPT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@app.handler("slow")
async def slow(job: wh.Job) -> int:
    """Healthy but slow: awaits ``seconds`` on the event loop."""
    await record("start", job)
    await asyncio.sleep(job.args["seconds"])
    await record("end", job)
    return os.getpid()


@app.handler("block")
async def block(job: wh.Job) -> int:
    """Blocks the event loop for ``seconds`` (a sync call inside an async handler)."""
    await record("start", job)
    time.sleep(job.args["seconds"])  # noqa: ASYNC251 - the point: it blocks the loop
    await record("end", job)
    return os.getpid()


@app.handler("fenced")
async def fenced(job: wh.Job) -> int:
    """Its first attempt computes for ``seconds`` without yielding (``time.sleep`` stands
    for the work); later attempts end at once.

    A process frozen mid-computation (SIGSTOP, a VM pause) finishes it when it thaws, and
    its worker then tries to record the run before its loop can hear from a heartbeat that
    the lease was lost: so the test sees the stale ack itself being refused.
    """
    started = await record("start", job)
    if job.attempt == 1:
        time.sleep(job.args["seconds"])  # noqa: ASYNC251 - work that does not yield
    write("end", job, started)  # no await between the work's end and the return
    return os.getpid()


@app.handler("stamp")
async def stamp(job: wh.Job) -> int:
    """Records when it starts, by the store's clock."""
    await record("start", job)
    await record("end", job)
    return os.getpid()


@app.handler("flaky", retries=1, backoff=wh.constant(2.0))
async def flaky(job: wh.Job) -> int:
    """Fails its first attempt with a retryable status; the retry is due 2 s later."""
    await record("start", job)
    await record("end", job)
    if job.attempt == 1:
        raise wh.JobError(wh.Status.UNAVAILABLE, "try again later")
    return os.getpid()


@app.handler("spawn")
async def spawn(job: wh.Job) -> int:
    """Enqueues a "stamp" job due ``delay`` seconds from now, from inside the worker."""
    await record("start", job)
    await app.enqueue("stamp", {"spawned_by": job.id}, delay=job.args["delay"])
    await record("end", job)
    return os.getpid()
