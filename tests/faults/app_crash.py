"""The app that worker processes of test_crash_recovery.py run.

Handlers append "start"/"end" lines to $ATTEMPT_LOG as in faultapp.py. The store this app
opens also appends "acked"/"refused" lines there for each success a worker asks the store to
record: "acked" when the store recorded it, "refused" when the run's lease had been taken
away (its token was stale). Those lines carry attempt 0: a settlement names no attempt.

$CRASH_MAX_SECONDS caps how long a "job" sleeps, so a test can make one worker's runs long
and another's short.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections.abc import Sequence

from faultapp import record

import workhorse as wh
from workhorse.backends.base import Backend, Settlement, State


def note(kind: str, job_id: str) -> None:
    line = f"{kind} {job_id} 0 {os.getpid()} {time.time():.6f}\n"
    fd = os.open(os.environ["ATTEMPT_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class ObservedApp(wh.App):
    """An App whose store reports every success it was asked to record to the attempt log."""

    async def backend(self) -> Backend:
        store = await super().backend()
        if "settle" not in vars(store):  # wrap the store's settle once
            settle = store.settle

            async def observed(settlements: Sequence[Settlement]) -> list[bool]:
                done = await settle(settlements)
                for settlement, stored in zip(settlements, done, strict=True):
                    if settlement.state is State.SUCCEEDED:
                        note("acked" if stored else "refused", settlement.job_id)
                return done

            store.settle = observed  # type: ignore[method-assign]
        return store


app = ObservedApp()  # $WORKHORSE_URL


# Many retries: a job caught in several crashes in a row must not end dead as worker_lost
# (that policy has a scenario of its own); these scenarios judge loss and duplicates.
@app.handler("job", retries=100)
async def job(job: wh.Job) -> None:
    record("start", job)
    seconds = job.args.get("seconds", 0.05)
    cap = os.environ.get("CRASH_MAX_SECONDS")
    await asyncio.sleep(min(seconds, float(cap)) if cap else seconds)
    record("end", job)


@app.handler("race", retries=100)
async def race(job: wh.Job) -> None:
    """Runs for about the lease on its first attempts, so its lease expires right around the
    time it ends; later attempts are short, so every job does finish."""
    record("start", job)
    lease = job.args["lease"]
    await asyncio.sleep(lease * random.uniform(0.6, 1.4) if job.attempt <= 3 else 0.01)
    record("end", job)


@app.handler("poison", retries=2)
async def poison(job: wh.Job) -> None:
    """Kills the process running it, every time."""
    record("start", job)
    os.kill(os.getpid(), signal.SIGKILL)
