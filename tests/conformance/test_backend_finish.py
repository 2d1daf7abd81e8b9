"""Leaving RUNNING: ack, retry, bury and release, each fenced by the attempt's token."""

from __future__ import annotations

import pytest

from workhorse import codec
from workhorse.backends.base import State


async def test_ack_succeeded_stores_status_result_and_finish_time(backend, running_job):
    job = await running_job()
    before = await backend.now()
    assert await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200,
                             result=codec.encode({"sent": True}))
    after = await backend.now()

    record = await backend.get(job.id)
    assert (record.state, record.status, record.attempt) == (State.SUCCEEDED, 200, 1)
    assert codec.decode(record.result) == {"sent": True}
    assert before <= record.finished_at <= after


async def test_ack_succeeded_without_a_result(backend, running_job):
    job = await running_job()
    assert await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=444)
    record = await backend.get(job.id)
    assert (record.state, record.status, record.result) == (State.SUCCEEDED, 444, None)


async def test_ack_cancelled(backend, running_job):
    job = await running_job()
    assert await backend.ack(job.id, job.token, state=State.CANCELLED, status=499)
    record = await backend.get(job.id)
    assert (record.state, record.status) == (State.CANCELLED, 499)
    assert record.finished_at is not None


async def test_retry_makes_the_job_retrying_with_its_failure(backend, running_job):
    job = await running_job(queue="q")
    run_at = await backend.now() + 3600
    assert await backend.retry(job.id, job.token, run_at=run_at, status=503,
                               error="unavailable", traceback="Traceback ...")

    record = await backend.get(job.id)
    assert (record.state, record.run_at, record.status) == (State.RETRYING, run_at, 503)
    assert (record.error, record.traceback) == ("unavailable", "Traceback ...")
    assert record.attempt == 1
    assert await backend.claim("worker-2", ["q"], 10, 30.0) == []


async def test_a_retried_job_is_claimed_again_once_due_as_attempt_two(backend, running_job):
    job = await running_job(queue="q")
    assert await backend.retry(job.id, job.token, run_at=await backend.now() - 1,
                               status=500, error="boom", traceback=None)

    [again] = await backend.claim("worker-2", ["q"], 10, 30.0)
    assert (again.id, again.state, again.attempt) == (job.id, State.RUNNING, 2)
    assert again.lease_owner == "worker-2"
    assert again.token and again.token != job.token


async def test_bury_makes_the_job_dead_with_its_failure(backend, running_job):
    job = await running_job()
    assert await backend.bury(job.id, job.token, status=403, error="forbidden",
                              traceback="Traceback ...")
    record = await backend.get(job.id)
    assert (record.state, record.status) == (State.DEAD, 403)
    assert (record.error, record.traceback) == ("forbidden", "Traceback ...")
    assert record.finished_at is not None


async def test_bury_without_keep_deletes_the_job(backend, running_job):
    job = await running_job()
    assert await backend.bury(job.id, job.token, status=400, error="bad", traceback=None,
                              keep=False)
    assert await backend.get(job.id) is None
    assert await backend.list_jobs() == []


async def test_release_gives_the_job_back_ready_with_its_attempt(backend, running_job):
    job = await running_job(queue="q")
    assert await backend.release(job.id, job.token)

    record = await backend.get(job.id)
    assert (record.state, record.attempt) == (State.READY, 0)
    [again] = await backend.claim("worker-2", ["q"], 10, 30.0)
    assert (again.id, again.attempt) == (job.id, 1)


# -- fencing -----------------------------------------------------------------------------------


def _ack(backend, job_id, token):
    return backend.ack(job_id, token, state=State.SUCCEEDED, status=200, result=b"1")


def _ack_cancelled(backend, job_id, token):
    return backend.ack(job_id, token, state=State.CANCELLED, status=499)


async def _retry(backend, job_id, token):
    return await backend.retry(job_id, token, run_at=await backend.now(), status=500,
                               error="boom", traceback=None)


def _bury(backend, job_id, token):
    return backend.bury(job_id, token, status=400, error="bad", traceback=None)


def _bury_deleting(backend, job_id, token):
    return backend.bury(job_id, token, status=400, error="bad", traceback=None, keep=False)


def _release(backend, job_id, token):
    return backend.release(job_id, token)


def _checkin(backend, job_id, token):
    return backend.checkin(job_id, token, "halfway")


MOVES = pytest.mark.parametrize(
    "move",
    [_ack, _ack_cancelled, _retry, _bury, _bury_deleting, _release, _checkin],
    ids=["ack", "ack-cancelled", "retry", "bury", "bury-deleting", "release", "checkin"],
)


@MOVES
async def test_a_wrong_token_changes_nothing(backend, running_job, move):
    job = await running_job()
    before = await backend.get(job.id)
    assert await move(backend, job.id, "not-the-token") is False
    assert await backend.get(job.id) == before


@MOVES
async def test_a_job_that_is_not_running_is_not_moved(backend, running_job, move):
    job = await running_job()
    assert await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200)
    before = await backend.get(job.id)
    assert await move(backend, job.id, job.token) is False
    assert await backend.get(job.id) == before


@MOVES
async def test_a_ready_job_is_not_moved(backend, running_job, move):
    released = await running_job()
    assert await backend.release(released.id, released.token)
    before = await backend.get(released.id)
    assert await move(backend, released.id, released.token) is False
    assert await backend.get(released.id) == before


@MOVES
async def test_an_unknown_job_is_not_moved(backend, move):
    assert await move(backend, "no-such-job", "token") is False
    assert await backend.list_jobs() == []


@MOVES
async def test_a_reaped_owner_is_fenced_off(backend, enqueue_job, clock_past, move):
    job_id = await enqueue_job(queue="q")
    [stale] = await backend.claim("worker-a", ["q"], 1, 0.01)
    await clock_past(stale.lease_expires_at)
    assert await backend.reap(3600) == 1
    [fresh] = await backend.claim("worker-b", ["q"], 1, 30.0)
    assert (fresh.id, fresh.attempt) == (job_id, 2)
    assert fresh.token != stale.token

    before = await backend.get(job_id)
    assert await move(backend, job_id, stale.token) is False
    assert await backend.get(job_id) == before
    assert await move(backend, job_id, fresh.token) is True


async def test_settle_applies_a_batch_of_moves_and_fences_each(backend, running_job, clock_past):
    from workhorse.backends.base import Settlement, State

    done = await running_job(queue="s1")
    failed = await running_job(queue="s2")
    dead = await running_job(queue="s3")
    back = await running_job(queue="s4")
    stale = await running_job(queue="s5")
    now = await backend.now()
    results = await backend.settle([
        Settlement(done.id, done.token, State.SUCCEEDED, 200, result=b'"ok"'),
        Settlement(failed.id, failed.token, State.RETRYING, 503, run_at=now + 3600,
                   error="later", traceback="tb"),
        Settlement(dead.id, dead.token, State.DEAD, 400, error="bad"),
        Settlement(back.id, back.token, State.READY),
        Settlement(stale.id, "not-the-token", State.SUCCEEDED, 200),
    ])
    assert results == [True, True, True, True, False]
    records = {r.id: r for r in [await backend.get(j.id) for j in
                                 (done, failed, dead, back, stale)]}
    assert (records[done.id].state, records[done.id].result) == (State.SUCCEEDED, b'"ok"')
    assert (records[failed.id].state, records[failed.id].status) == (State.RETRYING, 503)
    assert (records[dead.id].state, records[dead.id].error) == (State.DEAD, "bad")
    assert (records[back.id].state, records[back.id].attempt) == (State.READY, 0)
    assert records[stale.id].state is State.RUNNING
    assert await backend.settle([]) == []
