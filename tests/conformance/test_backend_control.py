"""Control verbs: cancel, cancel_all, heartbeat, workers, reap, checkin."""

from __future__ import annotations

import os

import pytest

from workhorse.backends.base import State, WorkerInfo


def worker_info(worker_id, **fields):
    defaults = {"host": "host-1", "pid": os.getpid(), "concurrency": 4,
                "queues": ["default"], "started_at": 1_700_000_000.0}
    return WorkerInfo(id=worker_id, **{**defaults, **fields})


async def scheduled(backend, enqueue_job, **fields):
    return await enqueue_job(run_at=await backend.now() + 3600, **fields)


async def retrying(backend, running_job, **fields):
    job = await running_job(**fields)
    assert await backend.retry(job.id, job.token, run_at=await backend.now() + 3600,
                               status=500, error="boom", traceback=None)
    return job.id


# -- cancel ------------------------------------------------------------------------------------


async def _ready(backend, enqueue_job, running_job):
    return await enqueue_job()


async def _scheduled(backend, enqueue_job, running_job):
    return await scheduled(backend, enqueue_job)


async def _retrying(backend, enqueue_job, running_job):
    return await retrying(backend, running_job)


@pytest.mark.parametrize("make", [_ready, _scheduled, _retrying],
                         ids=["ready", "scheduled", "retrying"])
async def test_cancel_finishes_a_waiting_job_at_once(backend, enqueue_job, running_job, make):
    job_id = await make(backend, enqueue_job, running_job)
    before = await backend.now()
    assert await backend.cancel(job_id) is State.CANCELLED
    after = await backend.now()

    record = await backend.get(job_id)
    assert (record.state, record.status) == (State.CANCELLED, 499)
    assert before <= record.finished_at <= after
    assert await backend.claim("worker-1", ["default"], 10, 30.0) == []


async def test_cancel_flags_a_running_job_for_its_worker(backend, running_job):
    job = await running_job(worker_id="worker-1")
    assert await backend.cancel(job.id) is State.RUNNING

    record = await backend.get(job.id)
    assert (record.state, record.cancel_requested, record.token) == \
        (State.RUNNING, True, job.token)
    reply = await backend.heartbeat(worker_info("worker-1"), [job.id], 30.0)
    assert reply.cancel == {job.id}
    assert reply.lost == frozenset()
    assert await backend.ack(job.id, job.token, state=State.CANCELLED, status=499)
    assert (await backend.get(job.id)).state is State.CANCELLED


async def test_a_heartbeat_reports_no_cancel_unless_asked(backend, running_job):
    job = await running_job(worker_id="worker-1")
    reply = await backend.heartbeat(worker_info("worker-1"), [job.id], 30.0)
    assert reply.cancel == frozenset() and reply.lost == frozenset()


async def test_cancel_of_an_unknown_job_returns_none(backend):
    assert await backend.cancel("no-such-job") is None


async def test_cancel_leaves_a_finished_job_as_it_is(backend, running_job):
    job = await running_job()
    assert await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200)
    before = await backend.get(job.id)
    assert await backend.cancel(job.id) is State.SUCCEEDED
    assert await backend.get(job.id) == before


async def _live_and_finished_jobs(backend, enqueue_job, running_job):
    """Jobs in every state across two queues and two names; returns {id: (queue, name)}."""
    # Claimed jobs outrank the queued ones so ``running_job`` claims the job it enqueued.
    jobs = {}
    for queue in ("q1", "q2"):
        for name in ("a", "b"):
            jobs[await enqueue_job(name, queue=queue)] = (queue, name)
            jobs[await scheduled(backend, enqueue_job, name=name, queue=queue)] = (queue, name)
            jobs[await retrying(backend, running_job, name=name, queue=queue,
                                priority=1)] = (queue, name)
            running = await running_job(name, queue=queue, priority=1)
            jobs[running.id] = (queue, name)
            done = await running_job(name, queue=queue, priority=1)
            assert await backend.ack(done.id, done.token, state=State.SUCCEEDED, status=200)
    return jobs


@pytest.mark.parametrize(("queue", "name"), [("q1", None), (None, "b"), ("q2", "a")],
                         ids=["by-queue", "by-name", "by-both"])
async def test_cancel_all_cancels_only_matching_live_jobs(
    backend, enqueue_job, running_job, queue, name
):
    jobs = await _live_and_finished_jobs(backend, enqueue_job, running_job)
    before = {job_id: await backend.get(job_id) for job_id in jobs}

    def matches(job_id):
        job_queue, job_name = jobs[job_id]
        return queue in (None, job_queue) and name in (None, job_name)

    expected = [j for j in jobs if matches(j) and before[j].state.live]
    assert await backend.cancel_all(queue=queue, name=name) == len(expected)

    for job_id, old in before.items():
        new = await backend.get(job_id)
        if job_id not in expected:
            assert new == old
        elif old.state is State.RUNNING:
            assert (new.state, new.cancel_requested) == (State.RUNNING, True)
        else:
            assert (new.state, new.status) == (State.CANCELLED, 499)


async def test_cancel_all_with_nothing_matching_returns_zero(backend, enqueue_job):
    await enqueue_job(queue="q")
    assert await backend.cancel_all(queue="other") == 0
    assert await backend.cancel_all(name="other") == 0


# -- heartbeats and workers --------------------------------------------------------------------


async def test_a_heartbeat_extends_the_lease_of_the_owner(backend, running_job):
    job = await running_job(worker_id="worker-1", lease=5.0)
    before = await backend.now()
    reply = await backend.heartbeat(worker_info("worker-1"), [job.id], 60.0)
    after = await backend.now()

    assert reply.lost == frozenset()
    record = await backend.get(job.id)
    assert record.lease_expires_at > job.lease_expires_at
    assert before + 60.0 <= record.lease_expires_at <= after + 60.0
    assert (record.state, record.token, record.lease_owner) == \
        (State.RUNNING, job.token, "worker-1")


async def test_a_heartbeat_reports_jobs_the_worker_does_not_hold_as_lost(
    backend, running_job, enqueue_job
):
    mine = await running_job(worker_id="worker-1", queue="mine")
    theirs = await running_job(worker_id="worker-2", queue="theirs")
    finished = await running_job(worker_id="worker-1", queue="finished")
    assert await backend.ack(finished.id, finished.token, state=State.SUCCEEDED, status=200)
    queued = await enqueue_job(queue="queued")

    reply = await backend.heartbeat(
        worker_info("worker-1"), [mine.id, theirs.id, finished.id, queued, "unknown"], 60.0)
    assert reply.lost == {theirs.id, finished.id, queued, "unknown"}
    assert reply.cancel == frozenset()
    assert (await backend.get(theirs.id)).lease_expires_at == theirs.lease_expires_at


async def test_workers_lists_the_workers_that_have_beaten(backend):
    assert await backend.workers() == []
    before = await backend.now()
    await backend.heartbeat(worker_info("worker-1", queues=["a", "b"], concurrency=8), [], 30.0)
    await backend.heartbeat(worker_info("worker-2", host="host-2", pid=4242), [], 30.0)
    after = await backend.now()

    workers = {w.id: w for w in await backend.workers()}
    assert set(workers) == {"worker-1", "worker-2"}
    one, two = workers["worker-1"], workers["worker-2"]
    assert (one.host, one.pid, one.concurrency, one.queues) == \
        ("host-1", os.getpid(), 8, ["a", "b"])
    assert (two.host, two.pid) == ("host-2", 4242)
    assert one.started_at == 1_700_000_000.0
    assert before <= one.last_beat <= after and before <= two.last_beat <= after


async def test_a_later_heartbeat_updates_the_worker(backend, clock_past):
    await backend.heartbeat(worker_info("worker-1", concurrency=1), [], 30.0)
    [first] = await backend.workers()
    await clock_past(first.last_beat)
    await backend.heartbeat(worker_info("worker-1", concurrency=2), [], 30.0)

    [second] = await backend.workers()
    assert second.concurrency == 2
    assert second.last_beat > first.last_beat


async def test_unregister_forgets_one_worker(backend):
    await backend.heartbeat(worker_info("worker-1"), [], 30.0)
    await backend.heartbeat(worker_info("worker-2"), [], 30.0)
    await backend.unregister("worker-1")
    assert [w.id for w in await backend.workers()] == ["worker-2"]
    await backend.unregister("never-seen")
    assert [w.id for w in await backend.workers()] == ["worker-2"]


# -- reap --------------------------------------------------------------------------------------


async def test_reap_requeues_jobs_whose_lease_expired(backend, running_job, clock_past):
    expired = await running_job(worker_id="worker-1", queue="a", lease=0.01)
    healthy = await running_job(worker_id="worker-1", queue="b", lease=3600.0)
    await backend.heartbeat(worker_info("worker-1"), [], 30.0)
    await clock_past(expired.lease_expires_at)

    assert await backend.reap(3600) == 1
    record = await backend.get(expired.id)
    assert record.state is State.READY
    assert await backend.get(healthy.id) == healthy
    assert [w.id for w in await backend.workers()] == ["worker-1"]

    [again] = await backend.claim("worker-2", ["a"], 1, 30.0)
    assert (again.id, again.attempt, again.lease_owner) == (expired.id, 2, "worker-2")


async def test_reap_requeues_the_jobs_of_a_silent_worker_and_forgets_it(
    backend, running_job, clock_past
):
    job = await running_job(worker_id="worker-1", lease=3600.0)
    await backend.heartbeat(worker_info("worker-1"), [job.id], 3600.0)
    [worker] = await backend.workers()
    await clock_past(worker.last_beat)

    assert await backend.reap(0) == 1
    assert (await backend.get(job.id)).state is State.READY
    assert await backend.workers() == []


async def test_reap_leaves_healthy_leases_and_workers_alone(backend, running_job):
    job = await running_job(worker_id="worker-1", lease=3600.0)
    await backend.heartbeat(worker_info("worker-1"), [job.id], 3600.0)
    before = await backend.get(job.id)

    assert await backend.reap(3600) == 0
    assert await backend.get(job.id) == before
    assert [w.id for w in await backend.workers()] == ["worker-1"]


# -- checkin -----------------------------------------------------------------------------------


async def test_checkin_stores_a_message_with_the_right_token(backend, running_job):
    job = await running_job()
    before = await backend.now()
    assert await backend.checkin(job.id, job.token, "10/20")
    after = await backend.now()

    record = await backend.get(job.id)
    assert record.checkin == "10/20"
    assert before <= record.checkin_at <= after
    assert await backend.checkin(job.id, job.token, "20/20")
    assert (await backend.get(job.id)).checkin == "20/20"


async def test_checkin_with_a_stale_token_stores_nothing(backend, running_job):
    job = await running_job()
    assert await backend.checkin(job.id, "not-the-token", "10/20") is False
    record = await backend.get(job.id)
    assert (record.checkin, record.checkin_at) == (None, None)
