"""Retention on every store: 20,000 jobs run while workers prune; finished jobs stay bounded
and live jobs are never pruned."""

import asyncio
import contextlib

import pytest

import workhorse as wh

from .runtime import running_worker

pytestmark = pytest.mark.slow

JOBS = 20_000
KEEP = 1_000


async def finished_count(app: wh.App) -> int:
    stats = await (await app.backend()).queue_stats()
    return sum(s.counts.get(state, 0) for s in stats
               for state in (wh.State.SUCCEEDED, wh.State.DEAD, wh.State.CANCELLED))


async def test_finished_jobs_stay_bounded_over_20000_jobs(app):
    done = asyncio.Event()
    count = 0

    @app.handler("noop")
    async def noop(job: wh.Job) -> None:
        nonlocal count
        count += 1
        if count == JOBS:
            done.set()

    app.retention(ttl=None, max_entries=KEEP)
    live = await app.enqueue("noop", delay=3600)
    for _ in range(JOBS // 2_000):
        await app.enqueue_many([wh.Job("noop") for _ in range(2_000)])
    peak = 0
    async with running_worker(app, concurrency=50, prune_interval=0.2):
        while not done.is_set():
            peak = max(peak, await finished_count(app))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)
        assert await app.wait_idle(timeout=60)
    await app.prune()
    finished = await finished_count(app)
    print(f"\n{app.url.split(':')[0]}: peak finished count {peak} of {JOBS} jobs, "
          f"{finished} after the last prune")
    assert finished == KEEP
    assert peak < JOBS // 2, "the workers' pruning should have kept the count down"
    assert await live.status() is wh.State.SCHEDULED
