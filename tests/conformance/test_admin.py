"""app.admin on every backend, with real jobs in every state (see seeding.py)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import workhorse as wh
from workhorse import codec
from workhorse.admin import Admin, JobView
from workhorse.backends.base import (
    HISTORY_LIMIT,
    WORKER_LOST,
    Backend,
    EnqueueOutcome,
    State,
    WorkerInfo,
)
from workhorse.job import new_job_id

from .conftest import new_job
from .seeding import LATER, Seeded, as_moved, seed, start, write


@pytest.fixture
async def store(app: wh.App) -> Backend:
    return await app.backend()


@pytest.fixture
async def jobs(store: Backend) -> Seeded:
    return await seed(store)


@pytest.fixture
def admin(app: wh.App) -> Admin:
    return app.admin


async def state_of(store: Backend, job_id: str) -> State | None:
    record = await store.get(job_id)
    return None if record is None else record.state


# -- reading ---------------------------------------------------------------------------------


async def test_queues_count_every_state_with_latency_and_pause(admin, jobs, store):
    await store.pause("work")
    queues = {q.name: q for q in await admin.queues()}
    assert set(queues) == {"q", "work"}
    assert queues["q"].counts == {"scheduled": 1, "ready": 1, "running": 0, "retrying": 0,
                                  "succeeded": 0, "dead": 0, "cancelled": 1}
    assert queues["work"].counts == {"scheduled": 0, "ready": 0, "running": 1, "retrying": 1,
                                     "succeeded": 1, "dead": 1, "cancelled": 0}
    assert queues["work"].paused and not queues["q"].paused
    assert queues["q"].latency >= 0.0
    assert queues["work"].latency == 0.0  # nothing ready there
    json.dumps([dataclasses.asdict(q) for q in queues.values()])  # JSON-friendly


async def test_stats_total_the_queues(admin, jobs, store):
    await store.pause("idle")
    stats = await admin.stats()
    assert stats.counts == {s.value: 1 for s in State}
    assert (stats.queues, stats.busy, stats.paused) == (3, 1, ["idle"])
    assert stats.workers == 0


async def test_workers_come_from_heartbeats(admin, store):
    worker = WorkerInfo(id="w-1", host="box", pid=42, concurrency=4, queues=["q", "work"],
                        started_at=await store.now())
    await store.heartbeat(worker, [], 30.0)
    [seen] = await admin.workers()
    assert (seen.id, seen.host, seen.pid, seen.concurrency, seen.queues) == \
        ("w-1", "box", 42, 4, ["q", "work"])
    assert seen.last_beat >= seen.started_at
    assert (await admin.stats()).workers == 1


async def test_busy_lists_running_jobs_with_their_checkins(admin, jobs):
    [busy] = await admin.busy()
    assert (busy.id, busy.state, busy.checkin, busy.lease_owner) == \
        (jobs.running, "running", "halfway", "worker-1")
    assert busy.checkin_at is not None and busy.lease_expires_at is not None
    assert [(a.attempt, a.finished_at) for a in busy.attempts] == [(1, None)]


async def test_jobs_are_filtered_and_paged_with_the_total(admin, jobs, store):
    more = [await write(store, new_job("mail", {"i": i}, queue="q")) for i in range(5)]
    page = await admin.jobs("ready", queue="q", limit=2, offset=2)
    assert page.total == 6 and (page.offset, page.limit) == (2, 2)
    assert [v.id for v in page.items] == more[1:3]  # oldest first
    assert (await admin.jobs(State.DEAD)).total == 1
    assert [v.id for v in (await admin.jobs("dead")).items] == [jobs.dead]
    everything = await admin.jobs(limit=100)
    assert everything.total == 12 == len(everything.items)
    by_name = await admin.jobs(name="crunch", queue="work")
    assert by_name.total == 4
    assert {v.state for v in by_name.items} == {"running", "retrying", "dead", "succeeded"}
    assert (await admin.jobs(state="cancelled", name="mail")).total == 0
    with pytest.raises(ValueError, match="unknown state 'zombie'"):
        await admin.jobs("zombie")


async def test_one_job_shows_args_headers_attempts_and_result(admin, jobs):
    ready = await admin.job(jobs.ready)
    assert ready is not None
    assert (ready.args, ready.args_error, ready.headers, ready.priority, ready.attempts) == \
        ({"to": "a@b.c"}, None, {"trace": "t1"}, 3, [])

    dead = await admin.job(jobs.dead)
    assert dead is not None
    assert (dead.state, dead.status, dead.error, dead.idempotency_key) == \
        ("dead", 400, "bad input", "idem-dead")
    [attempt] = dead.attempts
    assert (attempt.attempt, attempt.status, attempt.error, attempt.traceback) == \
        (1, 400, "bad input", "Traceback: bad")
    assert attempt.started_at is not None and attempt.finished_at is not None
    assert attempt.started_at <= attempt.finished_at

    retrying = await admin.job(jobs.retrying)
    assert retrying is not None
    assert [(a.attempt, a.status, a.error) for a in retrying.attempts] == [(1, 500, "boom")]

    done = await admin.job(jobs.succeeded)
    assert done is not None
    assert (done.result, done.status) == ({"sum": 10}, 200)
    assert [(a.attempt, a.status, a.error) for a in done.attempts] == [(1, 200, None)]

    scheduled = await admin.job(jobs.scheduled)
    assert scheduled is not None and scheduled.unique_key == "mail:later"
    assert await admin.job("no-such-job") is None
    json.dumps(dataclasses.asdict(dead))


async def test_undecodable_args_are_reported_not_raised(admin, store):
    bad = dataclasses.replace(new_job("mail"), payload=b"\xff{not json")
    await write(store, bad)
    view = await admin.job(bad.id)
    assert view is not None and view.args is None
    assert view.args_error is not None and "cannot be decoded" in view.args_error


# -- attempt history -------------------------------------------------------------------------


async def test_history_records_lost_workers_but_not_releases(admin, store, clock_past):
    job = new_job("crunch", queue="lost")
    await write(store, job)
    [claimed] = await store.claim("w", ["lost"], 1, 0.05)
    await clock_past(claimed.lease_expires_at or 0.0)
    assert await store.reap(worker_ttl=3600.0) == 1
    [again] = await store.claim("w", ["lost"], 1, 30.0)
    assert again.token is not None and await store.release(job.id, again.token)
    view = await admin.job(job.id)
    assert view is not None and view.state == "ready"
    [lost] = view.attempts
    assert (lost.attempt, lost.status, lost.error) == (1, None, WORKER_LOST)


async def test_history_keeps_the_latest_failed_attempts(admin, store):
    job = new_job("flaky", queue="flaky")
    await write(store, job)
    runs = HISTORY_LIMIT + 2
    for n in range(1, runs + 1):
        [claimed] = await store.claim("w", ["flaky"], 1, 30.0)
        assert claimed.attempt == n and claimed.token is not None
        assert await store.retry(job.id, claimed.token, run_at=0.0, status=503,
                                 error=f"try {n}", traceback=None)
    view = await admin.job(job.id)
    assert view is not None
    assert [a.attempt for a in view.attempts] == list(range(3, runs + 1))
    assert view.attempts[-1].error == f"try {runs}"


# -- moves -----------------------------------------------------------------------------------


async def test_retry_runs_a_dead_job_again_keeping_its_attempts(admin, jobs, store):
    assert await admin.retry(jobs.dead)
    record = await store.get(jobs.dead)
    assert record is not None
    assert (record.state, record.attempt, record.error, record.finished_at) == \
        (State.READY, 1, None, None)
    assert record.run_at <= await store.now()
    [claimed] = await store.claim("w", ["work"], 1, 30.0)
    assert (claimed.id, claimed.attempt) == (jobs.dead, 2)
    view = await admin.job(jobs.dead)
    assert view is not None and [a.status for a in view.attempts] == [400, None]
    # Its idempotency key still names it.
    [again] = await store.enqueue([new_job("crunch", idempotency_key="idem-dead")])
    assert (again.id, again.outcome) == (jobs.dead, EnqueueOutcome.EXISTING)


async def test_retry_takes_retrying_and_cancelled_jobs_but_no_others(admin, jobs, store):
    assert await admin.retry(jobs.retrying)
    assert await admin.retry(jobs.cancelled)
    for job_id in (jobs.retrying, jobs.cancelled):
        assert await state_of(store, job_id) is State.READY
    for job_id in (jobs.ready, jobs.scheduled, jobs.running, jobs.succeeded, "no-such-job"):
        before = await store.get(job_id)
        assert not await admin.retry(job_id)
        assert await store.get(job_id) == before


async def test_retry_all_moves_every_matching_job(admin, store):
    dead = []
    for n in range(3):
        job = new_job("crunch", {"n": n}, queue="bulk" if n < 2 else "other")
        assert await store.bury(job.id, await start(store, job), status=500, error="x",
                                traceback=None)
        dead.append(job.id)
    assert await admin.retry_all("dead", queue="bulk") == 2
    assert [await state_of(store, j) for j in dead] == [State.READY, State.READY, State.DEAD]
    assert await admin.retry_all() == 1
    assert await admin.retry_all() == 0
    with pytest.raises(ValueError, match="only retrying, dead, cancelled"):
        await admin.retry_all("ready")


async def test_retry_leaves_a_job_whose_unique_key_a_live_job_holds(admin, store):
    first = new_job("sync", {"a": 1}, queue="u", unique_key="sync:1")
    assert await store.bury(first.id, await start(store, first), status=500, error="x",
                            traceback=None)
    holder = await write(store, new_job("sync", {"a": 1}, queue="u", unique_key="sync:1"))
    assert not await admin.retry(first.id)
    assert await admin.retry_all("dead") == 0
    assert await state_of(store, first.id) is State.DEAD
    assert await store.cancel(holder) is State.CANCELLED
    assert await admin.retry(first.id)
    # The retried job holds the key again.
    [dup] = await store.enqueue([new_job("sync", {"a": 1}, queue="u", unique_key="sync:1")])
    assert (dup.id, dup.outcome) == (first.id, EnqueueOutcome.DUPLICATE)


async def test_requeue_makes_scheduled_and_retrying_jobs_due_now(admin, jobs, store):
    assert await admin.requeue(jobs.scheduled)
    assert await admin.requeue(jobs.retrying)
    for job_id in (jobs.ready, jobs.dead, jobs.running, jobs.cancelled):
        assert not await admin.requeue(job_id)
    claimed = await store.claim("w", ["q", "work"], 10, 30.0)
    assert {c.id for c in claimed} == {jobs.ready, jobs.scheduled, jobs.retrying}
    retried = next(c for c in claimed if c.id == jobs.retrying)
    assert retried.attempt == 2


async def test_requeue_all_by_state_and_queue(admin, store):
    now = await store.now()
    waiting = [await write(store, new_job("mail", {"i": i}, queue=q, run_at=now + LATER))
               for i, q in enumerate(["a", "a", "b"])]
    assert await admin.requeue_all(queue="a") == 2
    assert await admin.requeue_all("scheduled", limit=5) == 1
    assert {await state_of(store, j) for j in waiting} == {State.READY}
    with pytest.raises(ValueError, match="only scheduled, retrying"):
        await admin.requeue_all("dead")


async def test_delete_removes_any_job_but_a_running_one(admin, jobs, store):
    assert not await admin.delete(jobs.running)
    assert await state_of(store, jobs.running) is State.RUNNING
    for state, job_id in jobs.by_state().items():
        if state is not State.RUNNING:
            assert await admin.delete(job_id), state
            assert await store.get(job_id) is None
    assert not await admin.delete(jobs.dead)
    assert (await admin.jobs()).total == 1
    # A deleted job's keys are free again.
    [fresh] = await store.enqueue([new_job("crunch", idempotency_key="idem-dead")])
    assert fresh.outcome is EnqueueOutcome.CREATED
    [unique] = await store.enqueue([new_job("mail", queue="q", unique_key="mail:later")])
    assert unique.outcome is EnqueueOutcome.CREATED
    # The running job still finishes normally.
    assert await store.ack(jobs.running, jobs.token, state=State.SUCCEEDED, status=200)


async def test_delete_all_by_state_and_purge_ready(admin, jobs, store):
    extra = [await write(store, new_job("mail", {"i": i}, queue="q")) for i in range(3)]
    assert await admin.delete_all("dead", queue="q") == 0
    assert await admin.delete_all("dead") == 1
    assert await admin.delete_all(State.SUCCEEDED, name="crunch", queue="work") == 1
    with pytest.raises(ValueError, match="cannot be deleted"):
        await admin.delete_all("running")
    assert await admin.purge("q") == 4
    assert [await store.get(j) for j in [jobs.ready, *extra]] == [None] * 4
    remaining = {v.id for v in (await admin.jobs(limit=100)).items}
    assert remaining == {jobs.scheduled, jobs.cancelled, jobs.running, jobs.retrying}
    assert await admin.purge("q") == 0


async def test_pause_resume_and_paused(admin, jobs, store):
    await admin.pause("q")
    assert await admin.paused() == {"q"}
    assert await store.claim("w", ["q"], 5, 30.0) == []
    await admin.resume("q")
    assert await admin.paused() == set()
    [claimed] = await store.claim("w", ["q"], 5, 30.0)
    assert claimed.id == jobs.ready


# -- snapshots -------------------------------------------------------------------------------


async def rows_of(admin: Admin) -> list[dict[str, Any]]:
    return [row async for row in admin.export()]


@pytest.fixture
async def other(tmp_path: Path) -> AsyncIterator[wh.App]:
    """A second store of another kind: an SQLite file."""
    application = wh.App("sqlite:///" + str(tmp_path / "other.db"))
    try:
        yield application
    finally:
        await application.close()


async def test_export_has_every_job_and_paused_queue_in_order(admin, jobs, store):
    await store.pause("q")
    rows = await rows_of(admin)
    assert [r["kind"] for r in rows] == ["job"] * 7 + ["paused"]
    assert rows[-1] == {"kind": "paused", "queue": "q"}
    assert [r["id"] for r in rows[:7]] == [jobs.ready, jobs.scheduled, jobs.cancelled,
                                           jobs.running, jobs.retrying, jobs.dead,
                                           jobs.succeeded]
    by_id = {r["id"]: r for r in rows[:7]}
    assert json.loads(by_id[jobs.ready]["payload"]) == {"to": "a@b.c"}
    assert json.loads(by_id[jobs.succeeded]["result"]) == {"sum": 10}
    assert by_id[jobs.dead]["attempts"][0]["error"] == "bad input"
    json.dumps(rows)
    bare = [r async for r in admin.export(payload=False)]
    assert all("payload" not in r and "result" not in r for r in bare)
    with pytest.raises(ValueError, match="row 1 cannot be imported: it has no payload"):
        await admin.import_(bare)


async def test_a_snapshot_moves_to_another_store_and_back(admin, jobs, store, other):
    await store.pause("work")
    exported = await rows_of(admin)
    assert await other.admin.import_(exported) == 7
    assert await other.admin.paused() == {"work"}
    assert await rows_of(other.admin) == as_moved(exported)
    assert await other.admin.import_(exported) == 0  # every id is there already

    # Back into the store under test, emptied first (but for the running job).
    for state in State:
        if state is not State.RUNNING:
            await admin.delete_all(state)
    await store.resume("work")

    async def from_other() -> AsyncIterator[dict[str, Any]]:
        async for row in other.admin.export():
            yield row

    assert await admin.import_(from_other()) == 6  # the running job's id is taken
    assert await admin.paused() == {"work"}
    back = {r["id"]: r for r in await rows_of(admin) if r["kind"] == "job"}
    expected = {r["id"]: r for r in as_moved(exported) if r["kind"] == "job"}
    expected[jobs.running] = next(r for r in exported if r.get("id") == jobs.running)
    assert back == expected


async def test_imported_jobs_behave_as_they_did(admin, other):
    source = await seed(await other.backend())
    assert await admin.import_(other.admin.export()) == 7
    store = await admin.app.backend()
    # The unique key of the scheduled job and the idempotency key of the dead one hold.
    [dup] = await store.enqueue([new_job("mail", queue="q", unique_key="mail:later")])
    assert (dup.id, dup.outcome) == (source.scheduled, EnqueueOutcome.DUPLICATE)
    [same] = await store.enqueue([new_job("crunch", idempotency_key="idem-dead")])
    assert (same.id, same.outcome) == (source.dead, EnqueueOutcome.EXISTING)
    # The running job came in ready, so the queue yields it and the ready one.
    claimed = await store.claim("w", ["q", "work"], 10, 30.0)
    assert {c.id: c.attempt for c in claimed} == {source.ready: 1, source.running: 1}
    assert await admin.retry(source.dead)
    view = await admin.job(source.dead)
    assert view is not None and [a.error for a in view.attempts] == ["bad input"]
    assert view.args == {"n": 3}


async def test_import_refuses_a_malformed_row_after_writing_the_ones_before(admin):
    good = {"kind": "job", "id": new_job_id(), "name": "mail", "queue": "q", "state": "ready",
            "run_at": 1.0, "enqueued_at": 1.0, "payload": codec.encode({"a": 1}).decode()}
    with pytest.raises(ValueError, match="row 2 cannot be imported: the field 'name'"):
        await admin.import_([good, {k: v for k, v in good.items() if k != "name"}])
    view = await admin.job(good["id"])
    assert isinstance(view, JobView) and view.args == {"a": 1} and view.attempt == 0
    with pytest.raises(ValueError, match="row 1: not a snapshot row"):
        await admin.import_([{"kind": "nonsense"}])
