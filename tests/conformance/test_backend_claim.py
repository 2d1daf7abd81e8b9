"""Backend.claim: leases, order, paused queues, due times, exclusivity and handler limits."""

from __future__ import annotations

import asyncio

import pytest

from workhorse.backends.base import Limits, State


async def claim_ids(backend, worker_id, queues, limit, lease=30.0, limits=None):
    return [r.id for r in await backend.claim(worker_id, queues, limit, lease, limits)]


async def claim_one_by_one(backend, queues, limits=None):
    """The ids ``claim`` hands out one at a time until it hands out nothing."""
    order = []
    while claimed := await claim_ids(backend, "worker-1", queues, 1, limits=limits):
        order.extend(claimed)
    return order


async def test_a_claimed_job_is_running_under_a_lease(backend, enqueue_job):
    job_id = await enqueue_job(queue="q")
    before = await backend.now()
    [record] = await backend.claim("worker-1", ["q"], 1, 30.0)
    after = await backend.now()

    assert record.id == job_id
    assert (record.state, record.attempt, record.lease_owner) == (State.RUNNING, 1, "worker-1")
    assert record.token
    assert before + 30.0 <= record.lease_expires_at <= after + 30.0
    assert before <= record.started_at <= after
    stored = await backend.get(job_id)
    assert (stored.state, stored.attempt, stored.token, stored.lease_owner) == \
        (State.RUNNING, 1, record.token, "worker-1")
    assert stored.lease_expires_at == record.lease_expires_at


async def test_claim_returns_nothing_from_an_empty_store(backend):
    assert await backend.claim("worker-1", ["q"], 10, 30.0) == []


async def test_claim_takes_at_most_limit_jobs(backend, enqueue_job):
    ids = [await enqueue_job(queue="q") for _ in range(5)]
    claimed = await claim_ids(backend, "worker-1", ["q"], 2)

    assert len(claimed) == 2
    assert len(await backend.list_jobs(state=State.READY)) == 3
    assert len(await backend.list_jobs(state=State.RUNNING)) == 2
    assert set(claimed) <= set(ids)


async def test_each_claim_hands_out_a_new_token(backend, enqueue_job):
    await enqueue_job(queue="q")
    await enqueue_job(queue="q")
    first, second = await backend.claim("worker-1", ["q"], 2, 30.0)
    assert first.token and second.token and first.token != second.token


async def test_higher_priority_first_then_oldest_first(backend, enqueue_job):
    low_old = await enqueue_job(queue="q", priority=0)
    high_old = await enqueue_job(queue="q", priority=5)
    low_new = await enqueue_job(queue="q", priority=0)
    high_new = await enqueue_job(queue="q", priority=5)
    middle = await enqueue_job(queue="q", priority=1)

    assert await claim_one_by_one(backend, ["q"]) == \
        [high_old, high_new, middle, low_old, low_new]


async def test_fifo_within_one_priority(backend, enqueue_job):
    ids = [await enqueue_job(queue="q") for _ in range(6)]
    assert await claim_one_by_one(backend, ["q"]) == ids


async def test_queues_are_tried_in_the_order_given_and_empty_ones_skipped(
    backend, enqueue_job
):
    # Not in alphabetical order; the second queue's jobs are older and of higher priority,
    # and still come last.
    queues = ["zzz-empty", "urgent", "bulk"]
    late = [await enqueue_job(queue="bulk", priority=100) for _ in range(2)]
    early = [await enqueue_job(queue="urgent") for _ in range(2)]

    claimed = await claim_ids(backend, "worker-1", queues, 3)
    assert set(claimed) == {*early, late[0]}
    assert await claim_ids(backend, "worker-1", queues, 3) == [late[1]]


async def test_claim_only_takes_the_queues_asked_for(backend, enqueue_job):
    await enqueue_job(queue="elsewhere")
    assert await backend.claim("worker-1", ["q"], 10, 30.0) == []


async def test_a_paused_queue_is_skipped_until_resumed(backend, enqueue_job):
    held = await enqueue_job(queue="held")
    free = await enqueue_job(queue="free")
    await backend.pause("held")
    assert await backend.paused() == {"held"}

    assert await claim_ids(backend, "worker-1", ["held", "free"], 10) == [free]
    assert await claim_ids(backend, "worker-1", ["held", "free"], 10) == []
    assert (await backend.get(held)).state is State.READY

    await backend.resume("held")
    assert await backend.paused() == set()
    assert await claim_ids(backend, "worker-1", ["held", "free"], 10) == [held]


async def test_a_job_scheduled_in_the_future_is_not_claimed(backend, enqueue_job):
    later = await enqueue_job(queue="q", run_at=await backend.now() + 3600)
    assert await backend.claim("worker-1", ["q"], 10, 30.0) == []
    assert (await backend.get(later)).state is State.SCHEDULED


async def test_a_scheduled_job_is_claimed_once_due(backend, enqueue_job, clock_past):
    run_at = await backend.now() + 0.2
    job_id = await enqueue_job(queue="q", run_at=run_at)
    assert (await backend.get(job_id)).state is State.SCHEDULED

    await clock_past(run_at)
    [record] = await backend.claim("worker-1", ["q"], 10, 30.0)
    assert (record.id, record.state, record.attempt) == (job_id, State.RUNNING, 1)


async def test_a_due_retrying_job_is_claimed_and_a_future_one_is_not(backend, running_job):
    due = await running_job(queue="q")
    later = await running_job(queue="q")
    now = await backend.now()
    assert await backend.retry(due.id, due.token, run_at=now - 1, status=500,
                               error="boom", traceback=None)
    assert await backend.retry(later.id, later.token, run_at=now + 3600, status=500,
                               error="boom", traceback=None)

    [record] = await backend.claim("worker-2", ["q"], 10, 30.0)
    assert (record.id, record.attempt, record.lease_owner) == (due.id, 2, "worker-2")
    assert (await backend.get(later.id)).state is State.RETRYING


async def test_a_job_is_never_claimed_twice_by_concurrent_claims(backend, make_job):
    jobs = [make_job(queue="q") for _ in range(60)]
    await backend.enqueue(jobs)

    batches = await asyncio.gather(*(
        backend.claim(f"worker-{n}", ["q"], 5, 30.0) for n in range(20)
    ))
    ids = [r.id for batch in batches for r in batch]
    assert len(ids) == len(set(ids))
    assert set(ids) == {j.id for j in jobs}
    tokens = [r.token for batch in batches for r in batch]
    assert len(set(tokens)) == len(tokens)


# -- handler limits ----------------------------------------------------------------------------


async def _ack(backend, record):
    assert await backend.ack(record.id, record.token, state=State.SUCCEEDED, status=200)


async def _retry(backend, record):
    assert await backend.retry(record.id, record.token, run_at=await backend.now() + 3600,
                               status=500, error="boom", traceback=None)


async def _bury(backend, record):
    assert await backend.bury(record.id, record.token, status=400, error="bad",
                              traceback=None)


async def _release(backend, record):
    assert await backend.release(record.id, record.token)


async def test_max_concurrency_caps_running_jobs_store_wide(backend, enqueue_job):
    limits = {"limited": Limits(max_concurrency=2)}
    for _ in range(5):
        await enqueue_job("limited", queue="q")

    first = await backend.claim("worker-a", ["q"], 1, 30.0, limits)
    second = await backend.claim("worker-b", ["q"], 5, 30.0, limits)
    assert len(first) == 1 and len(second) == 1
    assert await backend.claim("worker-c", ["q"], 5, 30.0, limits) == []
    assert len(await backend.list_jobs(state=State.RUNNING)) == 2


async def test_max_concurrency_counts_running_jobs_of_every_queue(backend, running_job,
                                                                  enqueue_job):
    limits = {"limited": Limits(max_concurrency=1)}
    await running_job("limited", queue="one")
    await enqueue_job("limited", queue="two")
    assert await backend.claim("worker-2", ["two"], 5, 30.0, limits) == []


@pytest.mark.parametrize("leave", [_ack, _retry, _bury, _release],
                         ids=["ack", "retry", "bury", "release"])
async def test_a_job_leaving_running_frees_a_concurrency_slot(backend, enqueue_job, leave):
    limits = {"limited": Limits(max_concurrency=2)}
    for _ in range(4):
        await enqueue_job("limited", queue="q")
    running = await backend.claim("worker-a", ["q"], 5, 30.0, limits)
    assert len(running) == 2
    assert await backend.claim("worker-b", ["q"], 5, 30.0, limits) == []

    await leave(backend, running[0])
    assert len(await backend.claim("worker-b", ["q"], 5, 30.0, limits)) == 1
    assert await backend.claim("worker-b", ["q"], 5, 30.0, limits) == []


async def test_a_limited_handler_does_not_block_others_in_its_queue(backend, enqueue_job):
    limits = {"limited": Limits(max_concurrency=1), "drained": Limits(rate=0.001, burst=1)}
    limited = [await enqueue_job("limited", queue="q", priority=9) for _ in range(3)]
    drained = [await enqueue_job("drained", queue="q", priority=9) for _ in range(3)]
    free = [await enqueue_job("free", queue="q") for _ in range(2)]

    claimed = await claim_ids(backend, "worker-1", ["q"], 10, limits=limits)
    assert sorted(claimed) == sorted([limited[0], drained[0], *free])


async def test_a_rate_limit_allows_a_burst_then_nothing_until_refill(backend, enqueue_job):
    limits = {"limited": Limits(rate=0.001, burst=3)}  # no refill while the test runs
    for _ in range(6):
        await enqueue_job("limited", queue="q")

    assert len(await backend.claim("worker-a", ["q"], 2, 30.0, limits)) == 2
    assert len(await backend.claim("worker-b", ["q"], 10, 30.0, limits)) == 1
    assert await backend.claim("worker-c", ["q"], 10, 30.0, limits) == []
    assert len(await backend.list_jobs(state=State.READY)) == 3


async def test_a_rate_limit_refills_over_time(backend, enqueue_job, wait_for):
    limits = {"limited": Limits(rate=20.0, burst=1)}
    ids = {await enqueue_job("limited", queue="q") for _ in range(3)}
    claimed: list[str] = []

    async def all_claimed() -> bool:
        batch = await claim_ids(backend, "worker-1", ["q"], 10, limits=limits)
        assert len(batch) <= 1  # the bucket never holds more than its burst
        claimed.extend(batch)
        return len(claimed) == len(ids)

    await wait_for(all_claimed, what="the rate-limit bucket to refill")
    assert set(claimed) == ids


async def test_a_released_job_keeps_its_place_in_line(backend, enqueue_job):
    first = await enqueue_job()
    second = await enqueue_job()
    [claimed] = await backend.claim("w", ["default"], 1, 30.0)
    assert claimed.id == first
    assert await backend.release(first, claimed.token)
    [again] = await backend.claim("w", ["default"], 1, 30.0)
    assert again.id == first
    [then] = await backend.claim("w", ["default"], 1, 30.0)
    assert then.id == second
