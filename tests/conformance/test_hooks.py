"""Lifecycle hooks, per backend: on_queued, on_start and on_finish are called once each, in
order, per attempt; duplicates call nothing; a hook that raises is logged and harmless."""

import asyncio
import logging

import pytest

import workhorse as wh
from workhorse.backends.base import NewJob
from workhorse.job import new_job_id

from .runtime import running_worker, wait_state


def recorder(app: wh.App) -> list[tuple[str, wh.JobEvent]]:
    """Register sync and async hooks that append ``(kind, event)`` to the list returned."""
    events: list[tuple[str, wh.JobEvent]] = []

    def queued(event: wh.JobEvent) -> None:
        events.append(("queued", event))

    async def started(event: wh.JobEvent) -> None:
        events.append(("start", event))

    def finished(event: wh.JobEvent) -> None:
        events.append(("finish", event))

    app.hooks(on_queued=queued, on_start=started, on_finish=finished)
    return events


def of(events, job_id):
    return [(kind, event) for kind, event in events if event.id == job_id]


async def test_hooks_are_called_once_each_in_order(app):
    events = recorder(app)

    @app.handler("add", queue="math")
    async def add(job: wh.Job) -> int:
        return job.args["a"] + job.args["b"]

    ref = await app.enqueue("add", {"a": 2, "b": 3})
    [(kind, queued)] = events
    assert kind == "queued" and queued.kind == "queued"
    assert (queued.id, queued.name, queued.queue, queued.attempt, queued.state) == (
        ref.id, "add", "math", 0, wh.State.READY)
    assert queued.status is wh.Status.UNKNOWN and queued.args == {"a": 2, "b": 3}
    async with running_worker(app) as worker:
        assert await ref.result(timeout=10) == 5
    assert [kind for kind, _ in events] == ["queued", "start", "finish"]
    (_, start), (_, finish) = events[1:]
    assert (start.state, start.attempt, start.worker_id) == (wh.State.RUNNING, 1, worker.id)
    assert (finish.state, finish.status, finish.attempt, finish.error, finish.result) == (
        wh.State.SUCCEEDED, wh.Status.SUCCESS, 1, None, 5)
    assert finish.started_at is not None and finish.duration is not None
    assert finish.duration >= 0 and finish.enqueued_at is not None


async def test_a_retried_job_gets_start_and_finish_per_attempt_and_one_queued(app):
    events = recorder(app)
    calls = []

    @app.handler("flaky", retries=2, backoff=wh.constant(0.01))
    async def flaky(job: wh.Job) -> str:
        calls.append(job.attempt)
        if job.attempt < 3:
            raise wh.JobError(503, f"down on {job.attempt}")
        return "up"

    ref = await app.enqueue("flaky")
    async with running_worker(app):
        assert await ref.result(timeout=10) == "up"
    mine = of(events, ref.id)
    assert [(kind, e.attempt) for kind, e in mine] == [
        ("queued", 0), ("start", 1), ("finish", 1), ("start", 2), ("finish", 2),
        ("start", 3), ("finish", 3)]
    finishes = [e for kind, e in mine if kind == "finish"]
    assert [(e.state, e.status) for e in finishes] == [
        (wh.State.RETRYING, wh.Status.UNAVAILABLE), (wh.State.RETRYING, wh.Status.UNAVAILABLE),
        (wh.State.SUCCEEDED, wh.Status.SUCCESS)]
    assert [e.error for e in finishes[:2]] == ["down on 1", "down on 2"]
    assert len(events) == len(mine) == 7


async def test_a_dead_job_finishes_dead_and_a_scheduled_one_is_queued_scheduled(app):
    events = recorder(app)

    @app.handler("refused", retries=3)
    async def refused(job: wh.Job) -> None:
        raise wh.JobError(403, "not yours")

    app.register("later", lambda job: None)
    ref = await app.enqueue("refused")
    scheduled = await app.enqueue("later", delay=3600)
    async with running_worker(app):
        with pytest.raises(wh.JobFailed):
            await ref.result(timeout=10)
    assert [(k, e.state) for k, e in of(events, scheduled.id)] == [
        ("queued", wh.State.SCHEDULED)]
    assert [(k, e.state, e.status) for k, e in of(events, ref.id)] == [
        ("queued", wh.State.READY, wh.Status.UNKNOWN),
        ("start", wh.State.RUNNING, wh.Status.UNKNOWN),
        ("finish", wh.State.DEAD, wh.Status.FORBIDDEN)]


async def test_duplicates_call_no_queued_hook(app):
    events = recorder(app)
    app.register("once", lambda job: None)
    first = await app.enqueue("once", {"k": 1}, unique=True)
    assert await app.enqueue("once", {"k": 1}, unique=True) is None
    again = await app.enqueue("once", {"k": 2}, idempotency_key="key-1")
    same = await app.enqueue("once", {"k": 2}, idempotency_key="key-1")
    assert first is not None and again is not None and same is not None
    assert same.id == again.id
    assert [(kind, e.id) for kind, e in events] == [("queued", first.id), ("queued", again.id)]


async def test_a_raising_hook_is_logged_and_harmless(app, caplog):
    def broken_hook(event: wh.JobEvent) -> None:
        raise RuntimeError(f"hook bug on {event.kind}")

    async def broken_async_hook(event: wh.JobEvent) -> None:
        raise ValueError("async hook bug")

    app.hooks(on_queued=broken_hook, on_start=broken_async_hook, on_finish=broken_hook)
    events = recorder(app)  # registered after the broken ones: still called, in order
    app.register("echo", lambda job: job.args["word"])
    caplog.set_level(logging.ERROR, logger="workhorse.hooks")
    ref = await app.enqueue("echo", {"word": "hi"})
    async with running_worker(app):
        assert await ref.result(timeout=10) == "hi"
    assert [kind for kind, _ in events] == ["queued", "start", "finish"]
    failures = [r for r in caplog.records if r.name == "workhorse.hooks"]
    assert len(failures) == 3
    messages = [r.getMessage() for r in failures]
    assert "broken_hook (on_queued)" in messages[0]
    assert "broken_async_hook (on_start)" in messages[1]
    assert "broken_hook (on_finish)" in messages[2]
    assert all(ref.id in m for m in messages) and all(r.exc_info for r in failures)
    record = await ref.record()
    assert (record.state, record.attempt) == (wh.State.SUCCEEDED, 1)


async def test_hooks_of_a_kind_run_in_registration_order(app):
    trail = []
    for label in ("a", "b", "c"):
        app.hooks(on_start=lambda event, label=label: trail.append(label))
    app.register("noop", lambda job: None)
    ref = await app.enqueue("noop")
    async with running_worker(app):
        await ref.result(timeout=10)
    assert trail == ["a", "b", "c"]
    with pytest.raises(TypeError, match="callable"):
        app.hooks(on_finish="not a function")  # type: ignore[arg-type]


async def test_a_job_buried_without_running_gets_start_and_finish(app):
    events = recorder(app)
    app.register("fine", lambda job: "ok")
    backend = await app.backend()
    garbage_id = new_job_id()
    await backend.enqueue([NewJob(id=garbage_id, name="fine", queue="default",
                                  payload=b"\xff{not json", headers={}, priority=0,
                                  timeout=None)])
    async with running_worker(app):
        await wait_state(app.ref(garbage_id), wh.State.DEAD)
    # Written past the app (as a foreign producer would): no on_queued here.
    assert [(kind, e.state, e.status, e.attempt) for kind, e in of(events, garbage_id)] == [
        ("start", wh.State.RUNNING, wh.Status.UNKNOWN, 1),
        ("finish", wh.State.DEAD, wh.Status.BAD_REQUEST, 1)]
    assert of(events, garbage_id)[1][1].error.startswith("undecodable payload")


async def test_a_run_handed_back_at_shutdown_finishes_ready(app):
    events = recorder(app)
    started = asyncio.Event()

    @app.handler("slow")
    async def slow(job: wh.Job) -> None:
        started.set()
        await asyncio.sleep(60)

    ref = await app.enqueue("slow")
    async with running_worker(app) as worker:
        await asyncio.wait_for(started.wait(), 10)
        await worker.stop(graceful=False)
    assert await ref.status() is wh.State.READY
    assert [(kind, e.state, e.status) for kind, e in of(events, ref.id)] == [
        ("queued", wh.State.READY, wh.Status.UNKNOWN),
        ("start", wh.State.RUNNING, wh.Status.UNKNOWN),
        ("finish", wh.State.READY, wh.Status.UNKNOWN)]
