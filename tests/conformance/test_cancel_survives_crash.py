"""A cancel is not lost with its worker: a RUNNING job whose cancel was asked for and that
leaves RUNNING without its worker's ack (``reap`` of an expired lease or a silent worker, or
a release, as by a worker stopping past its grace period) ends CANCELLED, finished as an ack
as cancelled would finish it, never READY to run again."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

from workhorse.backends.base import WORKER_LOST, EnqueueOutcome, Settlement, State

from .conftest import new_job
from .test_backend_control import worker_info

#: Bound on how long a woken waiter may take to return: far below its own timeout.
PROMPT = 5.0
#: A waiter's own timeout: long enough that returning early proves a wake-up.
LONG = 30.0


async def assert_cancelled_as_by_ack(backend, backend_url, job_id, *, attempt, before, after):
    """The job ended as ``ack(state=CANCELLED, status=499)`` would have ended it, within
    ``[before, after]`` of store time, and nothing can claim it again."""
    record = await backend.get(job_id)
    assert (record.state, record.status, record.error, record.result) == \
        (State.CANCELLED, 499, "cancelled", None)
    assert (record.token, record.lease_owner, record.lease_expires_at) == (None, None, None)
    assert record.attempt == attempt
    assert before <= record.finished_at <= after
    assert await backend.attempt_history([job_id]) == {}  # a cancelled run is no failure
    assert await backend.list_jobs(state=State.CANCELLED) == [record]
    assert await backend.claim("worker-9", [record.queue], 10, 30.0) == []
    if backend_url.startswith("redis"):
        # Finished like any other job: kept for the result TTL, then gone.
        import redis.asyncio as aioredis

        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(backend_url).query))
        client = aioredis.Redis.from_url(backend_url.split("?")[0])
        try:
            assert await client.pttl(f"{{{query['namespace']}}}:job:{job_id}") > 0
        finally:
            await client.aclose()


@contextlib.asynccontextmanager
async def waiting_for(backend, job_id):
    """A ``wait_finished`` of the job, running and blocked; cancelled on the way out."""
    waiter = asyncio.create_task(backend.wait_finished(job_id, LONG))
    try:
        done, _ = await asyncio.wait({waiter}, timeout=0.2)
        assert not done, "wait_finished returned before the job finished"
        yield waiter
    finally:
        waiter.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await waiter


async def cancel_running(backend, running_job, **fields):
    """A job claimed by worker-1 whose cancel was asked for; the claimed record."""
    job = await running_job(**fields)
    assert await backend.cancel(job.id) is State.RUNNING
    assert (await backend.get(job.id)).cancel_requested
    return job


# -- reap ------------------------------------------------------------------------------------


async def test_reap_of_an_expired_lease_cancels_instead_of_requeueing(
    backend, backend_url, running_job, clock_past
):
    job = await cancel_running(backend, running_job, queue="q", lease=0.05)
    await clock_past(job.lease_expires_at)

    before = await backend.now()
    assert await backend.reap(3600) == 0  # nothing requeued
    after = await backend.now()
    await assert_cancelled_as_by_ack(backend, backend_url, job.id, attempt=1, before=before,
                                     after=after)


async def test_reap_of_a_silent_workers_job_cancels_it(
    backend, backend_url, running_job, clock_past
):
    job = await cancel_running(backend, running_job, queue="q", lease=3600.0)
    await backend.heartbeat(worker_info("worker-1"), [job.id], 3600.0)
    [worker] = await backend.workers()
    await clock_past(worker.last_beat)

    before = await backend.now()
    assert await backend.reap(0) == 0
    after = await backend.now()
    assert await backend.workers() == []
    await assert_cancelled_as_by_ack(backend, backend_url, job.id, attempt=1, before=before,
                                     after=after)


async def test_reap_counts_only_the_jobs_it_requeues(backend, running_job, clock_past):
    cancelled = await cancel_running(backend, running_job, queue="q1", lease=0.05)
    lost = await running_job(queue="q2", lease=0.05)
    healthy = await cancel_running(backend, running_job, queue="q3", lease=3600.0)
    await clock_past(max(cancelled.lease_expires_at, lost.lease_expires_at))

    assert await backend.reap(3600) == 1
    assert (await backend.get(cancelled.id)).state is State.CANCELLED
    requeued = await backend.get(lost.id)
    assert (requeued.state, requeued.error, requeued.attempt) == (State.READY, WORKER_LOST, 1)
    # A live lease is left alone, cancel asked or not: its worker learns it at its next beat.
    still = await backend.get(healthy.id)
    assert (still.state, still.cancel_requested, still.token) == \
        (State.RUNNING, True, healthy.token)


async def test_a_reaped_cancel_frees_the_unique_key_and_fences_the_old_token(
    backend, running_job, clock_past
):
    job = await cancel_running(backend, running_job, queue="q", lease=0.05, unique_key="only")
    await clock_past(job.lease_expires_at)
    assert await backend.reap(3600) == 0

    # The worker's process comes back: too late, its token is stale.
    assert not await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200)
    assert not await backend.release(job.id, job.token)
    assert (await backend.get(job.id)).state is State.CANCELLED
    [again] = await backend.enqueue([new_job(queue="q", unique_key="only")])
    assert again.outcome is EnqueueOutcome.CREATED


async def test_wait_finished_wakes_when_reap_cancels(backend, running_job, clock_past):
    job = await cancel_running(backend, running_job, lease=0.05)
    async with waiting_for(backend, job.id) as waiter:
        await clock_past(job.lease_expires_at)
        assert await backend.reap(3600) == 0
        record = await asyncio.wait_for(waiter, PROMPT)
    assert (record.id, record.state, record.status) == (job.id, State.CANCELLED, 499)


# -- release ---------------------------------------------------------------------------------


async def test_release_of_a_job_whose_cancel_was_asked_for_cancels_it(
    backend, backend_url, running_job
):
    job = await cancel_running(backend, running_job, queue="q", unique_key="only")

    before = await backend.now()
    assert await backend.release(job.id, job.token)
    after = await backend.now()
    # Finished as cancelled, so its attempt counts (a release to READY takes it back).
    await assert_cancelled_as_by_ack(backend, backend_url, job.id, attempt=1, before=before,
                                     after=after)
    assert not await backend.release(job.id, job.token)  # stale now
    [again] = await backend.enqueue([new_job(queue="q", unique_key="only")])
    assert again.outcome is EnqueueOutcome.CREATED


async def test_settle_releases_each_job_by_its_own_cancel_flag(
    backend, backend_url, running_job
):
    kept = await running_job(queue="q1")
    cancelled = await cancel_running(backend, running_job, queue="q2")

    before = await backend.now()
    assert await backend.settle([Settlement(kept.id, kept.token, State.READY),
                                 Settlement(cancelled.id, cancelled.token, State.READY)]) == \
        [True, True]
    after = await backend.now()
    released = await backend.get(kept.id)
    assert (released.state, released.attempt, released.status) == (State.READY, 0, None)
    await assert_cancelled_as_by_ack(backend, backend_url, cancelled.id, attempt=1,
                                     before=before, after=after)
    [again] = await backend.claim("worker-2", ["q1"], 1, 30.0)
    assert (again.id, again.attempt) == (kept.id, 1)


async def test_wait_finished_wakes_when_a_release_cancels(backend, running_job):
    job = await cancel_running(backend, running_job)
    async with waiting_for(backend, job.id) as waiter:
        assert await backend.release(job.id, job.token)
        record = await asyncio.wait_for(waiter, PROMPT)
    assert (record.id, record.state, record.status) == (job.id, State.CANCELLED, 499)


async def test_a_release_without_a_cancel_still_requeues(backend, running_job):
    job = await running_job(queue="q")
    assert await backend.release(job.id, job.token)
    record = await backend.get(job.id)
    assert (record.state, record.attempt, record.cancel_requested) == (State.READY, 0, False)



# -- retry -----------------------------------------------------------------------------------


async def test_retry_of_a_job_whose_cancel_was_asked_for_cancels_it(
    backend, backend_url, running_job
):
    # The run failed with a retryable status before its worker heard of the cancel: the
    # cancel wins, or the next claim would clear the flag and run the job again.
    job = await cancel_running(backend, running_job, queue="q", unique_key="only")

    before = await backend.now()
    assert await backend.retry(job.id, job.token, run_at=before, status=503,
                               error="JobError: down", traceback=None)
    after = await backend.now()
    await assert_cancelled_as_by_ack(backend, backend_url, job.id, attempt=1, before=before,
                                     after=after)
    [again] = await backend.enqueue([new_job(queue="q", unique_key="only")])
    assert again.outcome is EnqueueOutcome.CREATED


async def test_settle_retries_each_job_by_its_own_cancel_flag(
    backend, backend_url, running_job
):
    kept = await running_job(queue="q1")
    cancelled = await cancel_running(backend, running_job, queue="q2")

    before = await backend.now()
    assert await backend.settle([
        Settlement(kept.id, kept.token, State.RETRYING, status=503, run_at=before,
                   error="down"),
        Settlement(cancelled.id, cancelled.token, State.RETRYING, status=503, run_at=before,
                   error="down"),
    ]) == [True, True]
    after = await backend.now()
    retrying = await backend.get(kept.id)
    assert (retrying.state, retrying.status, retrying.error) == (State.RETRYING, 503, "down")
    await assert_cancelled_as_by_ack(backend, backend_url, cancelled.id, attempt=1,
                                     before=before, after=after)
