"""Runtime conformance: jobs a worker claims ahead of its free slots (prefetch), per backend."""

import asyncio

import workhorse as wh

from .runtime import running_worker, wait_state


async def _hold_first(app: wh.App) -> tuple[asyncio.Event, asyncio.Event]:
    """A "work" handler whose first run waits for ``release``; ``started`` is set then."""
    started, release = asyncio.Event(), asyncio.Event()

    @app.handler("work")
    async def work(job: wh.Job) -> None:
        if job.args["n"] == 0:
            started.set()
            await release.wait()

    return started, release


async def _states(app: wh.App, refs: list[wh.JobRef]) -> list[wh.State]:
    return [await ref.status() for ref in refs]


async def test_jobs_claimed_ahead_go_back_to_ready_when_the_worker_stops(app):
    started, release = await _hold_first(app)
    refs = await app.enqueue_many([wh.Job("work", {"n": n}) for n in range(4)])
    worker = wh.Worker(app, concurrency=1, prefetch=3, lease=5, heartbeat=0.1,
                       poll_interval=0.05, prune_interval=0)
    await worker.start()
    try:
        await asyncio.wait_for(started.wait(), 5)
        # One claim took all four: one runs, three wait in the worker's buffer.
        assert await _states(app, refs) == [wh.State.RUNNING] * 4
        assert worker.running == 1
    finally:
        await worker.stop(timeout=0.2)
    # The held run was cut short by the stop and every job is ready again, the three that
    # never started without an attempt counted.
    assert await _states(app, refs) == [wh.State.READY] * 4
    assert [(await ref.record()).attempt for ref in refs[1:]] == [0, 0, 0]
    release.set()


async def test_a_job_claimed_ahead_can_be_cancelled_before_it_starts(app):
    started, release = await _hold_first(app)
    refs = await app.enqueue_many([wh.Job("work", {"n": n}) for n in range(3)])
    async with running_worker(app, concurrency=1, prefetch=2):
        await asyncio.wait_for(started.wait(), 5)
        await app.cancel(refs[1].id)
        assert await wait_state(refs[1], wh.State.CANCELLED) is wh.State.CANCELLED
        assert await refs[0].status() is wh.State.RUNNING
        release.set()
        assert await wait_state(refs[2], wh.State.SUCCEEDED) is wh.State.SUCCEEDED
    assert await refs[0].status() is wh.State.SUCCEEDED


async def test_by_default_a_worker_with_slow_jobs_leaves_the_rest_to_others(app):
    both = asyncio.Event()
    holders: set[str] = set()

    @app.handler("slow")
    async def slow(job: wh.Job) -> None:
        holders.add((await app.ref(job.id).record()).lease_owner or "")
        if len(holders) == 2:
            both.set()
        await both.wait()

    refs = await app.enqueue_many([wh.Job("slow") for _ in range(2)])
    async with running_worker(app, concurrency=1), running_worker(app, concurrency=1):
        # Each worker took one: neither claimed the second job ahead of its free slot.
        await asyncio.wait_for(both.wait(), 10)
        for ref in refs:
            await wait_state(ref, wh.State.SUCCEEDED)
    assert len(holders) == 2
