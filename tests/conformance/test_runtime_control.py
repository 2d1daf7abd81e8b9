"""Runtime conformance: ordering, limits, pause, leases, reaping, schedules, cancellation,
retention and stopping, per backend."""

import asyncio
import time
from collections import Counter

import pytest

import workhorse as wh
from workhorse import codec
from workhorse.backends.base import NewJob
from workhorse.job import new_job_id

from .runtime import running_worker, wait_state


async def test_higher_priority_runs_first_within_a_queue(app):
    order = []
    app.register("work", lambda job: order.append(job.args["n"]))
    await app.pause("default")
    await app.enqueue_many([wh.EnqueueRequest("work", {"n": n}, priority=n % 3)
                            for n in range(9)])
    async with running_worker(app, concurrency=1):
        await app.resume("default")
        assert await app.wait_idle(timeout=10)
    assert order == [2, 5, 8, 1, 4, 7, 0, 3, 6]


async def test_paused_queues_are_not_fetched_and_empty_queues_are_skipped(app):
    ran = []
    app.register("a_job", lambda job: ran.append("a"), queue="a")
    app.register("b_job", lambda job: ran.append("b"), queue="b")
    await app.pause("a")
    assert await app.paused() == {"a"}
    held = await app.enqueue("a_job")
    async with running_worker(app, queues={"a": 10, "b": 1, "empty": 100}):
        # b's job completing proves the worker has fetched with "a" paused.
        await (await app.enqueue("b_job")).result(timeout=10)
        assert await held.status() is wh.State.READY
        await app.resume("a")
        await held.result(timeout=10)
    assert ran == ["b", "a"]


async def test_max_concurrency_holds_across_workers(app):
    active, peak = 0, 0

    @app.handler("exclusive", max_concurrency=1)
    async def exclusive(job: wh.Job) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    app.register("free", lambda job: None)
    refs = await app.enqueue_many([wh.Job("exclusive") for _ in range(12)]
                                  + [wh.Job("free") for _ in range(12)])
    async with running_worker(app, concurrency=4), running_worker(app, concurrency=4):
        for ref in refs:
            await ref.result(timeout=20)
    assert peak == 1


async def test_rate_limit_spaces_out_runs(app):
    starts = []
    app.register("limited", lambda job: starts.append(time.monotonic()), rate_limit="10/s")
    refs = await app.enqueue_many([wh.Job("limited") for _ in range(15)])
    async with running_worker(app, concurrency=8):
        for ref in refs:
            await ref.result(timeout=20)
    # A full bucket of 10 may run at once; the other 5 need 5 refills at 10 per second.
    assert max(starts) - min(starts) >= 0.4


async def test_checkins_are_stored_while_the_job_runs(app):
    release = asyncio.Event()
    checked = asyncio.Event()

    @app.handler("long")
    async def long(job: wh.Job) -> None:
        await job.checkin("sent 10/20")
        checked.set()
        await release.wait()

    ref = await app.enqueue("long")
    async with running_worker(app):
        await asyncio.wait_for(checked.wait(), 10)
        record = await ref.record()
        assert record.checkin == "sent 10/20"
        assert record.checkin_at is not None
        release.set()
        await ref.result(timeout=10)


async def test_leases_are_renewed_while_a_handler_runs(app):
    runs = Counter()

    @app.handler("slow")
    async def slow(job: wh.Job) -> None:
        runs[job.id] += 1
        await asyncio.sleep(1.0)  # five times the lease

    ref = await app.enqueue("slow")
    async with running_worker(app, lease=0.2, heartbeat=0.05, reap_interval=0.02), \
            running_worker(app, lease=0.2, heartbeat=0.05, reap_interval=0.02):
        await ref.result(timeout=10)
    assert runs[ref.id] == 1
    assert (await ref.record()).attempt == 1


async def test_workers_announce_themselves_and_leave_on_stop(app):
    app.register("noop", lambda job: None)
    backend = await app.backend()
    async with running_worker(app, concurrency=3, queues={"x": 2, "y": 1}) as worker:
        [info] = await backend.workers()
        assert (info.id, info.concurrency, sorted(info.queues)) == (worker.id, 3, ["x", "y"])
    assert await backend.workers() == []


async def test_the_reaper_requeues_jobs_of_a_dead_worker(app):
    ran = []
    app.register("orphan", lambda job: ran.append(job.attempt))
    backend = await app.backend()
    ref = await app.enqueue("orphan")
    # A worker that claimed the job and died: no heartbeat will ever renew its lease.
    [claimed] = await backend.claim("dead-worker", ["default"], 1, 0.1)
    assert claimed.id == ref.id
    async with running_worker(app):
        await ref.result(timeout=10)
    assert ran == [2]


async def test_every_and_cron_ticks_run_once_however_many_workers_run(app):
    ticks = Counter()
    enough = asyncio.Event()

    @app.handler("tick", every=0.5)
    async def tick(job: wh.Job) -> None:
        ticks[round(job.run_at, 3)] += 1
        if len(ticks) >= 3:
            enough.set()

    cron_runs = Counter()
    app.register("cron_job", lambda job: cron_runs.update([round(job.run_at)]))
    app.cron("* * * * * *", "cron_job")
    async with running_worker(app), running_worker(app), running_worker(app):
        await asyncio.wait_for(enough.wait(), 20)
        await app.wait_idle(timeout=10)
    assert set(ticks.values()) == {1}, ticks
    assert cron_runs, "the cron schedule never ran"
    assert set(cron_runs.values()) == {1}, cron_runs
    assert all(t * 2 == round(t * 2) for t in ticks)  # on multiples of the interval


async def test_cancel_a_queued_job(app):
    ran = []
    app.register("work", lambda job: ran.append(1))
    ref = await app.enqueue("work", delay=3600)
    assert await app.cancel(ref.id) is wh.State.CANCELLED
    record = await ref.record()
    assert (record.state, record.status) == (wh.State.CANCELLED, 499)
    with pytest.raises(wh.JobFailed, match="499"):
        await ref.result(timeout=1)
    assert await app.cancel("no-such-job") is None


async def test_cancel_a_running_job_reaches_its_worker(app):
    started = asyncio.Event()
    cancelled = asyncio.Event()

    @app.handler("forever")
    async def forever(job: wh.Job) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    ref = await app.enqueue("forever")
    async with running_worker(app):
        await asyncio.wait_for(started.wait(), 10)
        assert await ref.cancel() is wh.State.RUNNING
        await wait_state(ref, wh.State.CANCELLED)
    assert cancelled.is_set()
    assert (await ref.record()).status == 499


async def test_a_cancel_wins_over_a_retry_its_worker_had_not_heard_of(app):
    # The run fails retryably after the cancel was asked for but before a heartbeat could
    # tell the worker: the job must end CANCELLED, not be retried.
    started, fail = asyncio.Event(), asyncio.Event()
    runs = []

    @app.handler("flaky", retries=3, backoff=wh.constant(0.01))
    async def flaky(job: wh.Job) -> None:
        runs.append(job.attempt)
        started.set()
        await fail.wait()
        raise wh.JobError(503, "down")

    ref = await app.enqueue("flaky")
    async with running_worker(app, lease=120.0, heartbeat=60.0):
        await asyncio.wait_for(started.wait(), 10)
        assert await ref.cancel() is wh.State.RUNNING
        fail.set()
        await wait_state(ref, wh.State.CANCELLED)
    record = await ref.record()
    assert (record.state, record.status, record.attempt) == (wh.State.CANCELLED, 499, 1)
    assert runs == [1]


async def test_cancel_all_by_queue(app):
    app.register("a", lambda job: None, queue="qa")
    app.register("b", lambda job: None, queue="qb")
    await app.enqueue_many([wh.Job("a") for _ in range(3)] + [wh.Job("b") for _ in range(2)])
    assert await app.cancel_all(queue="qa") == 3
    stats = {s.name: s.counts for s in await (await app.backend()).queue_stats()}
    assert stats["qa"][wh.State.CANCELLED] == 3
    assert stats["qb"][wh.State.READY] == 2


async def test_retention_bounds_finished_jobs_and_never_prunes_live_ones(app):
    app.register("noop", lambda job: None)
    app.retention(ttl=None, max_entries=5)
    refs = await app.enqueue_many([wh.Job("noop") for _ in range(20)])
    live = await app.enqueue("noop", delay=3600)
    async with running_worker(app, concurrency=4):
        for ref in refs:
            await ref.result(timeout=10)
    assert await app.prune() == 15
    backend = await app.backend()
    assert len(await backend.list_jobs(state=wh.State.SUCCEEDED)) == 5
    assert await live.status() is wh.State.SCHEDULED
    app.retention(ttl=0, max_entries=None)
    assert await app.prune() == 5


async def test_bounded_queue_raises_queue_full_or_waits(app):
    app.register("work", lambda job: None, queue="small")
    app.queue("small", max_size=2)
    await app.enqueue("work")
    await app.enqueue("work")
    with pytest.raises(wh.QueueFull):
        await app.enqueue("work")
    with pytest.raises(wh.QueueFull):
        await app.enqueue("work", wait=0.05)
    async with running_worker(app):
        ref = await app.enqueue("work", wait=10)  # room appears as the worker drains
        await ref.result(timeout=10)


async def test_graceful_stop_lets_running_jobs_finish(app):
    started = asyncio.Event()

    @app.handler("short")
    async def short(job: wh.Job) -> str:
        started.set()
        await asyncio.sleep(0.1)
        return "finished"

    ref = await app.enqueue("short")
    worker = wh.Worker(app, poll_interval=0.05)
    await worker.start()
    await asyncio.wait_for(started.wait(), 10)
    await worker.stop(graceful=True, timeout=10)
    assert await ref.result(timeout=1) == "finished"


async def test_stop_past_the_grace_period_releases_jobs_to_run_again(app):
    started = asyncio.Event()
    attempts = []

    @app.handler("stubborn")
    async def stubborn(job: wh.Job) -> str:
        attempts.append(job.attempt)
        if len(attempts) == 1:
            started.set()
            await asyncio.Event().wait()
        return "second time"

    ref = await app.enqueue("stubborn")
    first = wh.Worker(app, poll_interval=0.05)
    await first.start()
    await asyncio.wait_for(started.wait(), 10)
    await first.stop(graceful=True, timeout=0.05)
    assert await ref.status() is wh.State.READY
    async with running_worker(app):
        assert await ref.result(timeout=10) == "second time"
    assert attempts == [1, 1]  # the interrupted run is not counted as an attempt


async def test_stop_now_releases_running_jobs(app):
    started = asyncio.Event()

    @app.handler("forever")
    async def forever(job: wh.Job) -> None:
        started.set()
        await asyncio.Event().wait()

    ref = await app.enqueue("forever")
    worker = wh.Worker(app, poll_interval=0.05)
    await worker.start()
    await asyncio.wait_for(started.wait(), 10)
    await worker.stop_now()
    record = await ref.record()
    assert (record.state, record.attempt) == (wh.State.READY, 0)


async def test_wait_idle(app):
    app.register("noop", lambda job: None)
    await app.enqueue_many([wh.Job("noop") for _ in range(10)])
    await app.enqueue("noop", delay=3600)  # scheduled jobs do not count as work to wait for
    assert await app.wait_idle(timeout=0.05) is False
    async with running_worker(app):
        assert await app.wait_idle(timeout=10) is True


async def test_garbage_written_beside_good_jobs_does_not_stop_the_worker(app):
    app.register("fine", lambda job: job.args["n"])
    backend = await app.backend()
    bad = [NewJob(id=new_job_id(), name="fine", queue="default", payload=junk, headers={},
                  priority=0, timeout=None)
           for junk in (b"", b"[1,", b"\x00\x01", codec.encode("just a string")[:-1])]
    await backend.enqueue(bad)
    refs = await app.enqueue_many([wh.Job("fine", args={"n": n}) for n in range(5)])
    async with running_worker(app):
        assert [await r.result(timeout=10) for r in refs] == list(range(5))
        for job in bad:
            await wait_state(app.ref(job.id), wh.State.DEAD)
