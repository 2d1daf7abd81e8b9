"""Lost attempts: ``reap`` marks the jobs it requeues WORKER_LOST (a fact, in every store),
and the Worker counts a lost attempt as a failed one, so a job that kills every worker
running it ends DEAD after its allowed attempts instead of looping forever."""

from __future__ import annotations

from workhorse.backends.base import WORKER_LOST, Backend, JobRecord, State

from .conftest import wait_until
from .runtime import running_worker, wait_state

# -- the store's fact ------------------------------------------------------------------------


async def test_reap_marks_a_requeued_job_lost_and_keeps_its_attempt(
    backend, running_job, clock_past
):
    failed = await running_job(queue="q")
    assert await backend.retry(failed.id, failed.token, run_at=await backend.now(),
                               status=500, error="boom", traceback="Traceback: boom")
    [again] = await backend.claim("worker-1", ["q"], 1, 0.01)
    assert (again.id, again.attempt, again.error) == (failed.id, 2, "boom")
    healthy = await running_job(queue="other", lease=3600.0)
    await clock_past(again.lease_expires_at)

    assert await backend.reap(3600) == 1
    reaped = await backend.get(failed.id)
    assert (reaped.state, reaped.attempt) == (State.READY, 2)
    assert (reaped.error, reaped.traceback) == (WORKER_LOST, None)
    assert await backend.get(healthy.id) == healthy

    [third] = await backend.claim("worker-2", ["q"], 1, 30.0)
    assert (third.attempt, third.error) == (3, WORKER_LOST)  # the worker learns it at claim


async def test_a_silent_workers_jobs_are_marked_lost(backend, running_job, clock_past):
    from .test_backend_control import worker_info

    job = await running_job(worker_id="worker-1", lease=3600.0)
    await backend.heartbeat(worker_info("worker-1"), [job.id], 3600.0)
    [worker] = await backend.workers()
    await clock_past(worker.last_beat)

    assert await backend.reap(0) == 1
    assert (await backend.get(job.id)).error == WORKER_LOST


async def test_success_after_a_lost_attempt_clears_the_mark(backend, running_job, clock_past):
    first = await running_job(queue="q", lease=0.01)
    await clock_past(first.lease_expires_at)
    assert await backend.reap(3600) == 1
    [second] = await backend.claim("worker-2", ["q"], 1, 30.0)
    assert await backend.ack(second.id, second.token, state=State.SUCCEEDED, status=200)
    done = await backend.get(first.id)
    assert (done.state, done.error, done.attempt) == (State.SUCCEEDED, None, 2)


async def test_release_keeps_the_mark_and_does_not_count_the_attempt(
    backend, running_job, clock_past
):
    first = await running_job(queue="q", lease=0.01)
    await clock_past(first.lease_expires_at)
    await backend.reap(3600)
    [second] = await backend.claim("worker-2", ["q"], 1, 30.0)
    assert await backend.release(second.id, second.token)
    released = await backend.get(first.id)
    assert (released.state, released.attempt, released.error) == (State.READY, 1, WORKER_LOST)


# -- the runtime's policy --------------------------------------------------------------------


async def lose_attempts(backend: Backend, job_id: str, times: int) -> JobRecord:
    """Claim the job ``times`` times for workers that never come back, reaping each lease."""
    for n in range(times):
        [claimed] = await backend.claim(f"vanished-{n}", ["default"], 1, 0.01)
        assert claimed.id == job_id

        async def expired(lease_end: float = claimed.lease_expires_at or 0.0) -> bool:
            return await backend.now() > lease_end

        await wait_until(expired, what="the lease to expire")
        assert await backend.reap(3600) == 1
    record = await backend.get(job_id)
    assert record is not None
    return record


async def test_a_job_lost_on_its_last_allowed_attempt_is_dead_without_running(app):
    ran: list[int] = []
    app.register("poison", lambda job: ran.append(job.attempt), retries=2)
    app.register("fine", lambda job: ran.append(0))
    backend = await app.backend()
    ref = await app.enqueue("poison")
    lost = await lose_attempts(backend, ref.id, 3)  # retries + 1 attempts, each lost
    assert (lost.attempt, lost.error) == (3, WORKER_LOST)
    other = await app.enqueue("fine")

    async with running_worker(app):
        assert await wait_state(ref, State.DEAD) is State.DEAD
        await other.result(timeout=10)
    record = await ref.record()
    assert (record.status, record.error, record.attempt) == (500, WORKER_LOST, 4)
    assert ran == [0]  # the poison job never ran in this worker; the other job did


async def test_a_job_lost_before_its_last_attempt_runs_again(app):
    ran: list[int] = []
    app.register("flaky_host", lambda job: ran.append(job.attempt), retries=2)
    backend = await app.backend()
    ref = await app.enqueue("flaky_host")
    await lose_attempts(backend, ref.id, 2)

    async with running_worker(app):
        await ref.result(timeout=10)
    record = await ref.record()
    assert (record.state, record.attempt, record.error) == (State.SUCCEEDED, 3, None)
    assert ran == [3]


async def test_skip_dead_drops_a_job_lost_too_often(app):
    app.register("poison", lambda job: None, retries=0, skip_dead=True)
    backend = await app.backend()
    ref = await app.enqueue("poison")
    await lose_attempts(backend, ref.id, 1)

    async with running_worker(app):
        async def gone() -> bool:
            return await backend.get(ref.id) is None

        await wait_until(gone, timeout=10, what="the job to be dropped")


async def test_lost_and_failed_attempts_count_alike(app):
    """A crash, then a 500, then a crash: the three attempts of retries=2 are spent."""
    ran: list[int] = []
    app.register("mixed", lambda job: ran.append(job.attempt), retries=2)
    backend = await app.backend()
    ref = await app.enqueue("mixed")
    await lose_attempts(backend, ref.id, 1)
    [second] = await backend.claim("worker-1", ["default"], 1, 30.0)
    assert await backend.retry(second.id, second.token, run_at=await backend.now(),
                               status=500, error="boom", traceback=None)
    record = await lose_attempts(backend, ref.id, 1)
    assert (record.attempt, record.error) == (3, WORKER_LOST)

    async with running_worker(app):
        assert await wait_state(ref, State.DEAD) is State.DEAD
    assert ran == []
    assert (await ref.record()).error == WORKER_LOST
