"""Backend.enqueue: new jobs, their states, unique and idempotency keys, bounded queues."""

from __future__ import annotations

import pytest

from workhorse import codec
from workhorse.backends.base import EnqueueOutcome, State
from workhorse.errors import QueueFull


async def test_a_new_job_is_ready_with_attempt_zero_and_its_fields_stored(backend, make_job):
    job = make_job("send", {"to": "a@b.c"}, queue="mail", priority=7,
                   headers={"trace": "t1"}, timeout=12.5)
    before = await backend.now()
    [done] = await backend.enqueue([job])
    after = await backend.now()

    assert (done.id, done.outcome, done.state) == (job.id, EnqueueOutcome.CREATED, State.READY)
    record = await backend.get(job.id)
    assert record is not None
    assert (record.state, record.attempt) == (State.READY, 0)
    assert (record.name, record.queue, record.priority, record.timeout) == \
        ("send", "mail", 7, 12.5)
    assert codec.decode(record.payload) == {"to": "a@b.c"}
    assert record.headers == {"trace": "t1"}
    assert before <= record.enqueued_at <= after
    assert before <= record.run_at <= after
    assert record.token is None and record.status is None and record.finished_at is None


async def test_a_job_due_in_the_future_is_scheduled(backend, make_job):
    run_at = await backend.now() + 3600
    job = make_job(run_at=run_at)
    [done] = await backend.enqueue([job])

    assert (done.outcome, done.state) == (EnqueueOutcome.CREATED, State.SCHEDULED)
    record = await backend.get(job.id)
    assert (record.state, record.attempt, record.run_at) == (State.SCHEDULED, 0, run_at)


async def test_a_job_due_in_the_past_is_ready(backend, make_job):
    job = make_job(run_at=await backend.now() - 60)
    [done] = await backend.enqueue([job])
    assert done.state is State.READY
    assert (await backend.get(job.id)).state is State.READY


async def test_a_batch_gets_one_result_per_job_in_order(backend, make_job):
    future = await backend.now() + 3600
    jobs = [make_job("a"), make_job("b", run_at=future), make_job("c", queue="other")]
    results = await backend.enqueue(jobs)

    assert [r.id for r in results] == [j.id for j in jobs]
    assert [r.outcome for r in results] == [EnqueueOutcome.CREATED] * 3
    assert [r.state for r in results] == [State.READY, State.SCHEDULED, State.READY]
    assert {r.id for r in await backend.list_jobs()} == {j.id for j in jobs}


async def test_an_empty_batch_writes_nothing(backend):
    assert await backend.enqueue([]) == []
    assert await backend.list_jobs() == []


# -- unique keys -----------------------------------------------------------------------------


async def test_a_second_live_job_with_a_unique_key_is_a_duplicate(backend, make_job):
    first, second = make_job(unique_key="k"), make_job(unique_key="k")
    await backend.enqueue([first])
    [done] = await backend.enqueue([second])

    assert (done.id, done.outcome, done.state) == \
        (first.id, EnqueueOutcome.DUPLICATE, State.READY)
    assert await backend.get(second.id) is None
    assert [r.id for r in await backend.list_jobs()] == [first.id]


async def test_a_scheduled_job_holds_its_unique_key(backend, make_job):
    first = make_job(unique_key="k", run_at=await backend.now() + 3600)
    await backend.enqueue([first])
    [done] = await backend.enqueue([make_job(unique_key="k")])

    assert (done.id, done.outcome, done.state) == \
        (first.id, EnqueueOutcome.DUPLICATE, State.SCHEDULED)
    assert len(await backend.list_jobs()) == 1


async def test_unique_keys_are_checked_within_one_batch(backend, make_job):
    jobs = [make_job(unique_key="k"), make_job(unique_key="k"), make_job(unique_key="other")]
    results = await backend.enqueue(jobs)

    assert [(r.id, r.outcome) for r in results] == [
        (jobs[0].id, EnqueueOutcome.CREATED),
        (jobs[0].id, EnqueueOutcome.DUPLICATE),
        (jobs[2].id, EnqueueOutcome.CREATED),
    ]
    assert {r.id for r in await backend.list_jobs()} == {jobs[0].id, jobs[2].id}


async def test_running_and_retrying_jobs_hold_their_unique_key(backend, make_job, running_job):
    running = await running_job(unique_key="k")
    [done] = await backend.enqueue([make_job(unique_key="k")])
    assert (done.id, done.outcome, done.state) == \
        (running.id, EnqueueOutcome.DUPLICATE, State.RUNNING)

    assert await backend.retry(running.id, running.token, run_at=await backend.now() + 3600,
                               status=500, error="boom", traceback=None)
    [done] = await backend.enqueue([make_job(unique_key="k")])
    assert (done.id, done.outcome, done.state) == \
        (running.id, EnqueueOutcome.DUPLICATE, State.RETRYING)
    assert len(await backend.list_jobs()) == 1


async def _succeed(backend, record):
    assert await backend.ack(record.id, record.token, state=State.SUCCEEDED, status=200)


async def _bury(backend, record):
    assert await backend.bury(record.id, record.token, status=400, error="bad", traceback=None)


async def _cancel(backend, record):
    assert await backend.ack(record.id, record.token, state=State.CANCELLED, status=499)


@pytest.mark.parametrize("finish", [_succeed, _bury, _cancel], ids=["ack", "bury", "cancel"])
async def test_a_finished_job_frees_its_unique_key(backend, make_job, running_job, finish):
    first = await running_job(unique_key="k")
    await finish(backend, first)

    again = make_job(unique_key="k")
    [done] = await backend.enqueue([again])
    assert (done.id, done.outcome, done.state) == (again.id, EnqueueOutcome.CREATED, State.READY)
    [done] = await backend.enqueue([make_job(unique_key="k")])
    assert (done.id, done.outcome) == (again.id, EnqueueOutcome.DUPLICATE)


async def test_cancelling_a_queued_job_frees_its_unique_key(backend, make_job):
    first = make_job(unique_key="k")
    await backend.enqueue([first])
    assert await backend.cancel(first.id) is State.CANCELLED

    again = make_job(unique_key="k")
    [done] = await backend.enqueue([again])
    assert (done.id, done.outcome) == (again.id, EnqueueOutcome.CREATED)


# -- idempotency keys --------------------------------------------------------------------------


async def test_a_repeated_idempotency_key_returns_the_first_job(backend, make_job):
    first = make_job(args={"n": 1}, idempotency_key="req-1")
    await backend.enqueue([first])
    [done] = await backend.enqueue([make_job(args={"n": 2}, idempotency_key="req-1")])

    assert (done.id, done.outcome, done.state) == \
        (first.id, EnqueueOutcome.EXISTING, State.READY)
    [only] = await backend.list_jobs()
    assert only.id == first.id and codec.decode(only.payload) == {"n": 1}


async def test_an_idempotency_key_returns_the_first_job_even_after_it_finished(
    backend, make_job, running_job
):
    first = await running_job(idempotency_key="req-1")
    await _succeed(backend, first)

    [done] = await backend.enqueue([make_job(idempotency_key="req-1")])
    assert (done.id, done.outcome, done.state) == \
        (first.id, EnqueueOutcome.EXISTING, State.SUCCEEDED)
    assert len(await backend.list_jobs()) == 1


async def test_idempotency_keys_are_checked_within_one_batch(backend, make_job):
    jobs = [make_job(idempotency_key="req"), make_job(idempotency_key="req")]
    results = await backend.enqueue(jobs)

    assert [(r.id, r.outcome) for r in results] == [
        (jobs[0].id, EnqueueOutcome.CREATED),
        (jobs[0].id, EnqueueOutcome.EXISTING),
    ]
    assert [r.id for r in await backend.list_jobs()] == [jobs[0].id]


# -- bounded queues ----------------------------------------------------------------------------


async def test_a_queue_may_be_filled_up_to_its_max_size(backend, make_job):
    jobs = [make_job(queue="q") for _ in range(3)]
    results = await backend.enqueue(jobs, max_sizes={"q": 3})
    assert [r.outcome for r in results] == [EnqueueOutcome.CREATED] * 3


async def test_queue_full_writes_nothing_from_the_batch(backend, make_job):
    kept = [make_job(queue="q"), make_job(queue="q")]
    await backend.enqueue(kept, max_sizes={"q": 3})
    batch = [make_job(queue="other"), make_job(queue="q"), make_job(queue="q")]

    with pytest.raises(QueueFull):
        await backend.enqueue(batch, max_sizes={"q": 3})

    assert {r.id for r in await backend.list_jobs()} == {j.id for j in kept}
    for job in batch:
        assert await backend.get(job.id) is None
    stats = {s.name: s for s in await backend.queue_stats()}
    assert set(stats) == {"q"}
    assert stats["q"].counts[State.READY] == 2


async def test_a_full_queue_counts_every_live_state(backend, make_job, running_job):
    await running_job(queue="q")
    await backend.enqueue([make_job(queue="q", run_at=await backend.now() + 3600)])
    with pytest.raises(QueueFull):
        await backend.enqueue([make_job(queue="q")], max_sizes={"q": 2})
    assert len(await backend.list_jobs(queue="q")) == 2


async def test_finished_jobs_do_not_count_towards_the_max_size(backend, make_job, running_job):
    done = await running_job(queue="q")
    await _succeed(backend, done)
    [result] = await backend.enqueue([make_job(queue="q")], max_sizes={"q": 1})
    assert result.outcome is EnqueueOutcome.CREATED


async def test_queues_without_a_limit_are_unaffected(backend, make_job):
    await backend.enqueue([make_job(queue="q")], max_sizes={"q": 1})
    jobs = [make_job(queue="free") for _ in range(5)]
    results = await backend.enqueue(jobs, max_sizes={"q": 1})
    assert [r.outcome for r in results] == [EnqueueOutcome.CREATED] * 5
    with pytest.raises(QueueFull):
        await backend.enqueue([make_job(queue="q")], max_sizes={"q": 1})

