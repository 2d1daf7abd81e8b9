"""Reading the store: get, list_jobs, queue_stats, pause state and prune."""

from __future__ import annotations

from workhorse.backends.base import State


async def test_get_of_an_unknown_job_is_none(backend):
    assert await backend.get("no-such-job") is None


async def test_get_returns_a_snapshot(backend, enqueue_job):
    job_id = await enqueue_job(queue="q")
    snapshot = await backend.get(job_id)
    await backend.claim("worker-1", ["q"], 1, 30.0)
    assert snapshot.state is State.READY
    assert (await backend.get(job_id)).state is State.RUNNING


# -- list_jobs ---------------------------------------------------------------------------------


async def test_list_jobs_returns_every_job_oldest_first(backend, enqueue_job):
    ids = [await enqueue_job(queue=f"q{n % 2}", priority=n) for n in range(5)]
    assert [r.id for r in await backend.list_jobs()] == ids


async def test_list_jobs_filters_by_state_queue_and_name(backend, enqueue_job, running_job):
    running = await running_job("a", queue="q1")
    ready_a = await enqueue_job("a", queue="q1")
    ready_b = await enqueue_job("b", queue="q1")
    other_queue = await enqueue_job("a", queue="q2")

    def ids(records):
        return [r.id for r in records]

    assert ids(await backend.list_jobs(state=State.RUNNING)) == [running.id]
    assert ids(await backend.list_jobs(state=State.READY)) == [ready_a, ready_b, other_queue]
    assert ids(await backend.list_jobs(queue="q2")) == [other_queue]
    assert ids(await backend.list_jobs(name="a")) == [running.id, ready_a, other_queue]
    assert ids(await backend.list_jobs(state=State.READY, queue="q1", name="a")) == [ready_a]
    assert await backend.list_jobs(state=State.DEAD) == []
    assert await backend.list_jobs(queue="nowhere") == []


async def test_list_jobs_pages_with_limit_and_offset(backend, enqueue_job):
    ids = [await enqueue_job(queue="q") for _ in range(7)]

    assert [r.id for r in await backend.list_jobs(limit=3)] == ids[:3]
    assert [r.id for r in await backend.list_jobs(limit=3, offset=3)] == ids[3:6]
    assert [r.id for r in await backend.list_jobs(limit=3, offset=6)] == ids[6:]
    assert await backend.list_jobs(limit=3, offset=7) == []
    assert [r.id for r in await backend.list_jobs(queue="q", limit=2, offset=1)] == ids[1:3]


# -- queue_stats -------------------------------------------------------------------------------


async def test_queue_stats_counts_jobs_per_queue_and_state(backend, enqueue_job, running_job):
    later = await backend.now() + 3600
    for state_setter in ("succeeded", "dead", "cancelled", "retrying", "running"):
        job = await running_job(queue="q", priority=1)
        if state_setter == "succeeded":
            await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200)
        elif state_setter == "dead":
            await backend.bury(job.id, job.token, status=400, error="bad", traceback=None)
        elif state_setter == "cancelled":
            await backend.ack(job.id, job.token, state=State.CANCELLED, status=499)
        elif state_setter == "retrying":
            await backend.retry(job.id, job.token, run_at=later, status=500, error="boom",
                                traceback=None)
    await enqueue_job(queue="q")
    await enqueue_job(queue="q")
    await enqueue_job(queue="q", run_at=later)
    await enqueue_job(queue="other")

    stats = {s.name: s for s in await backend.queue_stats()}
    assert set(stats) == {"q", "other"}
    counts = {state: stats["q"].counts.get(state, 0) for state in State}
    assert counts == {
        State.SCHEDULED: 1, State.READY: 2, State.RUNNING: 1, State.RETRYING: 1,
        State.SUCCEEDED: 1, State.DEAD: 1, State.CANCELLED: 1,
    }
    assert {s: n for s, n in stats["other"].counts.items() if n} == {State.READY: 1}
    assert stats["q"].paused is False


async def test_queue_stats_lists_a_paused_empty_queue(backend):
    await backend.pause("idle")
    [stats] = await backend.queue_stats()
    assert (stats.name, stats.paused, stats.latency) == ("idle", True, 0.0)
    assert not any(stats.counts.values())

    await backend.resume("idle")
    assert await backend.queue_stats() == []


async def test_queue_stats_latency_is_the_age_of_the_oldest_ready_job(
    backend, enqueue_job, clock_past
):
    job_id = await enqueue_job(queue="q")
    await enqueue_job(queue="waiting", run_at=await backend.now() + 3600)
    record = await backend.get(job_id)
    await clock_past(max(record.enqueued_at, record.run_at))

    stats = {s.name: s for s in await backend.queue_stats()}
    assert stats["q"].latency > 0
    assert stats["q"].latency < 3600
    assert stats["waiting"].latency == 0.0


async def test_queue_stats_latency_is_never_negative(backend, enqueue_job):
    await enqueue_job(queue="q")
    [stats] = await backend.queue_stats()
    assert stats.latency >= 0


# -- prune -------------------------------------------------------------------------------------


async def _live_jobs(backend, enqueue_job, running_job):
    """One job in each live state; returns their ids."""
    later = await backend.now() + 3600
    running = await running_job(queue="live", priority=1)
    retrying = await running_job(queue="live", priority=1)
    assert await backend.retry(retrying.id, retrying.token, run_at=later, status=500,
                               error="boom", traceback=None)
    return {running.id, retrying.id, await enqueue_job(queue="live"),
            await enqueue_job(queue="live", run_at=later)}


async def _finished_one_after_another(backend, running_job, clock_past, count):
    """``count`` finished jobs with strictly increasing finished_at; returns the records."""
    finished = []
    for n in range(count):
        job = await running_job(queue="done")
        if n % 3 == 0:
            assert await backend.ack(job.id, job.token, state=State.SUCCEEDED, status=200)
        elif n % 3 == 1:
            assert await backend.bury(job.id, job.token, status=400, error="bad",
                                      traceback=None)
        else:
            assert await backend.ack(job.id, job.token, state=State.CANCELLED, status=499)
        finished.append(await backend.get(job.id))
        await clock_past(finished[-1].finished_at)
    return finished


async def test_prune_by_finish_time_never_deletes_live_jobs(
    backend, enqueue_job, running_job, clock_past
):
    live = await _live_jobs(backend, enqueue_job, running_job)
    old = await _finished_one_after_another(backend, running_job, clock_past, 3)
    cutoff = await clock_past(old[-1].finished_at)
    await clock_past(cutoff)
    recent = await _finished_one_after_another(backend, running_job, clock_past, 2)

    assert await backend.prune(finished_before=cutoff) == 3
    assert {r.id for r in await backend.list_jobs()} == live | {r.id for r in recent}

    assert await backend.prune(finished_before=await backend.now() + 3600) == 2
    assert {r.id for r in await backend.list_jobs()} == live


async def test_prune_keeps_the_most_recent_finished_jobs(
    backend, enqueue_job, running_job, clock_past
):
    live = await _live_jobs(backend, enqueue_job, running_job)
    finished = await _finished_one_after_another(backend, running_job, clock_past, 5)

    assert await backend.prune(keep=2) == 3
    assert {r.id for r in await backend.list_jobs()} == live | {r.id for r in finished[-2:]}

    assert await backend.prune(keep=0) == 2
    assert {r.id for r in await backend.list_jobs()} == live


async def test_prune_with_both_rules_deletes_what_either_selects(
    backend, enqueue_job, running_job, clock_past
):
    live = await _live_jobs(backend, enqueue_job, running_job)
    finished = await _finished_one_after_another(backend, running_job, clock_past, 4)

    # keep=3 alone would delete finished[0]; the cutoff alone would delete finished[:2].
    assert await backend.prune(finished_before=finished[2].finished_at, keep=3) == 2
    assert {r.id for r in await backend.list_jobs()} == live | {r.id for r in finished[2:]}


async def test_prune_without_rules_or_finished_jobs_deletes_nothing(
    backend, enqueue_job, running_job
):
    live = await _live_jobs(backend, enqueue_job, running_job)
    assert await backend.prune() == 0
    assert await backend.prune(finished_before=await backend.now() + 3600, keep=0) == 0
    assert {r.id for r in await backend.list_jobs()} == live
