"""Waiting on the store: wait_finished and wait_for_work wake up promptly and time out."""

from __future__ import annotations

import asyncio

from workhorse.backends.base import State

#: Bound on how long a woken waiter may take to return: far below its own timeout.
PROMPT = 5.0
#: A waiter's own timeout in these tests: long enough that returning early proves a wake-up.
LONG = 30.0


async def still_pending(task, seconds=0.2):
    """Give ``task`` time to block; True if it is still waiting afterwards."""
    done, _ = await asyncio.wait({task}, timeout=seconds)
    return not done


async def test_wait_finished_returns_once_another_task_acks(backend, running_job):
    job = await running_job()
    waiter = asyncio.create_task(backend.wait_finished(job.id, LONG))
    assert await still_pending(waiter)

    assert await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200,
                             result=b'"ok"')
    record = await asyncio.wait_for(waiter, PROMPT)
    assert (record.id, record.state, record.status, record.result) == \
        (job.id, State.SUCCEEDED, 200, b'"ok"')


async def test_wait_finished_wakes_for_a_cancelled_queued_job(backend, enqueue_job):
    job_id = await enqueue_job()
    waiter = asyncio.create_task(backend.wait_finished(job_id, LONG))
    assert await still_pending(waiter)

    await backend.cancel(job_id)
    record = await asyncio.wait_for(waiter, PROMPT)
    assert (record.state, record.status) == (State.CANCELLED, 499)


async def test_wait_finished_wakes_for_a_buried_job(backend, running_job):
    job = await running_job()
    waiter = asyncio.create_task(backend.wait_finished(job.id, LONG))
    assert await still_pending(waiter)

    assert await backend.bury(job.id, job.token, status=400, error="bad", traceback=None)
    record = await asyncio.wait_for(waiter, PROMPT)
    assert (record.state, record.error) == (State.DEAD, "bad")


async def test_wait_finished_does_not_return_for_a_retry(backend, running_job):
    job = await running_job()
    waiter = asyncio.create_task(backend.wait_finished(job.id, 0.5))
    assert await backend.retry(job.id, job.token, run_at=await backend.now() + 3600,
                               status=500, error="boom", traceback=None)
    assert await asyncio.wait_for(waiter, PROMPT) is None


async def test_wait_finished_returns_a_finished_job_at_once(backend, running_job):
    job = await running_job()
    assert await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200)
    record = await asyncio.wait_for(backend.wait_finished(job.id, LONG), PROMPT)
    assert (record.id, record.state) == (job.id, State.SUCCEEDED)


async def test_wait_finished_times_out_with_none_for_a_live_job(backend, enqueue_job):
    job_id = await enqueue_job()
    assert await asyncio.wait_for(backend.wait_finished(job_id, 0.2), PROMPT) is None
    assert (await backend.get(job_id)).state is State.READY


async def test_wait_for_work_returns_after_an_enqueue(backend, enqueue_job):
    waiter = asyncio.create_task(backend.wait_for_work(["q"], LONG))
    await still_pending(waiter)  # a backend may wake spuriously; it must not oversleep

    await enqueue_job(queue="q")
    await asyncio.wait_for(waiter, PROMPT)


async def test_wait_for_work_returns_when_a_scheduled_job_falls_due(backend, enqueue_job):
    await enqueue_job(queue="q", run_at=await backend.now() + 0.3)
    await asyncio.wait_for(backend.wait_for_work(["q"], LONG), PROMPT)


async def test_wait_for_work_returns_after_its_timeout(backend):
    await asyncio.wait_for(backend.wait_for_work(["q"], 0.1), PROMPT)
