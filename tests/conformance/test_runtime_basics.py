"""Runtime conformance: producing, running, results, retries and dead jobs, per backend."""

import asyncio
import socket

import pytest

import workhorse as wh
from workhorse import codec
from workhorse.backends.base import NewJob
from workhorse.job import new_job_id

from .runtime import running_worker, wait_state


async def test_a_job_runs_and_its_result_is_awaitable(app):
    @app.handler("add")
    async def add(job: wh.Job) -> int:
        return job.args["a"] + job.args["b"]

    ref = await app.enqueue("add", {"a": 2, "b": 3})
    assert await ref.status() is wh.State.READY
    async with running_worker(app):
        assert await ref.result(timeout=10) == 5
    record = await ref.record()
    assert (record.state, record.status, record.attempt) == (wh.State.SUCCEEDED, 200, 1)


async def test_enqueue_sync_from_sync_code(app):
    app.register("echo", lambda job: job.args["word"])
    ref = await asyncio.to_thread(app.enqueue_sync, "echo", {"word": "hi"})
    async with running_worker(app):
        assert await ref.result(timeout=10) == "hi"
    with pytest.raises(RuntimeError, match="await the async method"):
        app.enqueue_sync("echo", {"word": "x"})


async def test_enqueue_many_returns_refs_in_order(app):
    app.register("double", lambda job: job.args["n"] * 2)
    refs = await app.enqueue_many(
        [wh.Job("double", args={"n": n}) for n in range(50)]
        + [{"name": "double", "args": {"n": 100}}]
    )
    async with running_worker(app, concurrency=4):
        results = [await ref.result(timeout=10) for ref in refs]
    assert results == [n * 2 for n in range(50)] + [200]


async def test_non_serializable_args_fail_before_anything_is_written(app):
    app.register("use", lambda job: None)
    sock = socket.socket()
    try:
        with pytest.raises(wh.SerializationError, match=r"args\['conn'\]"):
            await app.enqueue("use", {"conn": sock})
        with pytest.raises(wh.SerializationError):
            await app.enqueue_many([wh.Job("use", args={"ok": 1}),
                                    wh.Job("use", args={"conn": sock})])
    finally:
        sock.close()
    assert await (await app.backend()).list_jobs() == []


async def test_a_job_that_is_not_well_formed_fails_before_anything_is_written(app):
    app.register("use", lambda job: None)
    with pytest.raises(wh.ConfigurationError, match="job name must be a non-empty string"):
        await app.enqueue(wh.Job("use"))  # a Job where the name belongs
    with pytest.raises(wh.ConfigurationError, match="job name"):
        await app.enqueue_many([wh.Job("use"), {"name": ""}])
    with pytest.raises(wh.ConfigurationError, match="queue must be a non-empty string"):
        await app.enqueue("use", queue=7)  # type: ignore[arg-type]
    with pytest.raises(wh.ConfigurationError, match="idempotency_key"):
        await app.enqueue("use", idempotency_key="")
    assert await (await app.backend()).list_jobs() == []


async def test_delayed_jobs_wait_for_their_time(app):
    app.register("stamp", lambda job: None)
    later = await app.enqueue("stamp", delay=3600)
    soon = await app.enqueue("stamp", delay=0.2)
    assert await later.status() is wh.State.SCHEDULED
    async with running_worker(app):
        await soon.result(timeout=10)
        assert await later.status() is wh.State.SCHEDULED
    record = await soon.record()
    assert record.started_at >= record.run_at


async def test_at_accepts_a_time(app):
    app.register("stamp", lambda job: None)
    backend = await app.backend()
    ref = await app.enqueue("stamp", at=await backend.now() + 0.1)
    async with running_worker(app):
        await ref.result(timeout=10)


async def test_retries_with_backoff_then_success(app):
    @app.handler("flaky", retries=3, backoff=wh.constant(0.05))
    async def flaky(job: wh.Job) -> int:
        if job.attempt < 3:
            raise wh.JobError(503, "try later")
        return job.attempt

    ref = await app.enqueue("flaky")
    async with running_worker(app):
        assert await ref.result(timeout=10) == 3
    assert (await ref.record()).attempt == 3


async def test_dead_after_the_last_retry_with_the_error_kept(app):
    @app.handler("broken", retries=2, backoff=wh.constant(0.01))
    async def broken(job: wh.Job) -> None:
        raise RuntimeError("always")

    ref = await app.enqueue("broken")
    async with running_worker(app):
        with pytest.raises(wh.JobFailed, match="500"):
            await ref.result(timeout=10)
    record = await ref.record()
    assert (record.state, record.status, record.attempt) == (wh.State.DEAD, 500, 3)
    assert "RuntimeError: always" in record.error
    assert "Traceback" in record.traceback


async def test_4xx_is_dead_at_once_and_skip_dead_keeps_nothing(app):
    @app.handler("forbidden", retries=5)
    async def forbidden(job: wh.Job) -> None:
        raise wh.JobError(403, "nope")

    @app.handler("dropped", retries=0, skip_dead=True)
    async def dropped(job: wh.Job) -> None:
        raise wh.JobError(400, "bad")

    ref = await app.enqueue("forbidden")
    gone = await app.enqueue("dropped")
    async with running_worker(app):
        with pytest.raises(wh.JobFailed):
            await ref.result(timeout=10)
        await app.wait_idle(timeout=10)
    record = await ref.record()
    assert (record.state, record.status, record.attempt) == (wh.State.DEAD, 403, 1)
    with pytest.raises(wh.JobNotFound):
        await gone.record()


async def test_typed_args_are_checked_in_the_durable_path(app):
    from dataclasses import dataclass

    @dataclass
    class Point:
        x: int

    @app.handler("move")
    async def move(job: wh.Job[Point]) -> int:
        return job.args.x + 1

    ok = await app.enqueue("move", Point(x=1))
    bad = await app.enqueue("move", {"x": "far"})
    async with running_worker(app):
        assert await ok.result(timeout=10) == 2
        with pytest.raises(wh.JobFailed, match="400"):
            await bad.result(timeout=10)
    assert "x" in (await bad.record()).error


async def test_unknown_handler_and_undecodable_payload_go_dead_and_the_worker_goes_on(app):
    app.register("fine", lambda job: "ok")
    backend = await app.backend()
    garbage_id = new_job_id()
    await backend.enqueue([NewJob(id=garbage_id, name="fine", queue="default",
                                  payload=b"\xff{not json", headers={}, priority=0,
                                  timeout=None)])
    unknown = await app.enqueue("no_such_handler", {"a": 1}, queue="default")
    after = await app.enqueue("fine")
    async with running_worker(app):
        assert await after.result(timeout=10) == "ok"
        await wait_state(unknown, wh.State.DEAD)
        await wait_state(app.ref(garbage_id), wh.State.DEAD)
    garbage = await backend.get(garbage_id)
    assert garbage.status == 400
    assert garbage.error.startswith("undecodable payload")
    record = await unknown.record()
    assert record.status == 400
    assert "no handler registered for 'no_such_handler'" in record.error


async def test_result_that_does_not_serialize_is_a_failure(app):
    app.register("leaky", lambda job: object(), retries=0)
    ref = await app.enqueue("leaky")
    async with running_worker(app):
        with pytest.raises(wh.JobFailed, match="result"):
            await ref.result(timeout=10)


async def test_result_timeout_and_unknown_job(app):
    app.register("never", lambda job: None)
    ref = await app.enqueue("never", delay=3600)
    with pytest.raises(TimeoutError):
        await ref.result(timeout=0.05)
    with pytest.raises(wh.JobNotFound):
        await app.ref("nope").result(timeout=0.05)


async def test_unique_jobs_and_idempotency_keys(app):
    app.register("sync_user", lambda job: None, unique=True)
    first = await app.enqueue("sync_user", {"id": 1, "full": True})
    assert await app.enqueue("sync_user", {"full": True, "id": 1}) is None  # same args
    assert await app.enqueue("sync_user", {"id": 2}) is not None
    scheduled = await app.enqueue("sync_user", {"id": 3}, delay=3600)
    assert scheduled is not None
    assert await app.enqueue("sync_user", {"id": 3}, delay=10) is None
    keyed = await app.enqueue("sync_user", {"id": 4}, unique_key="user-4")
    assert await app.enqueue("sync_user", {"id": 5}, unique_key="user-4") is None
    once = await app.enqueue("sync_user", {"id": 6}, idempotency_key="req-6")
    again = await app.enqueue("sync_user", {"id": 7}, idempotency_key="req-6")
    assert again == once
    async with running_worker(app):
        await first.result(timeout=10)
        await keyed.result(timeout=10)
    # The first job finished: its key is free again.
    assert await app.enqueue("sync_user", {"id": 1, "full": True}) is not None


async def test_headers_priority_and_timeout_reach_the_handler(app):
    seen = {}

    @app.handler("inspect", priority=3, timeout=9)
    async def inspect(job: wh.Job) -> None:
        seen.update(headers=job.headers, priority=job.priority, timeout=job.timeout,
                    queue=job.queue)

    ref = await app.enqueue("inspect", headers={"tenant": "acme"}, queue="special")
    async with running_worker(app, queues=["special"]):
        await ref.result(timeout=10)
    assert seen == {"headers": {"tenant": "acme"}, "priority": 3, "timeout": 9,
                    "queue": "special"}


async def test_codec_round_trip_of_results(app):
    payload = {"nested": [1, 2.5, "x", None, True, {"k": "v"}]}
    app.register("same", lambda job: job.args)
    ref = await app.enqueue("same", payload)
    async with running_worker(app):
        assert await ref.result(timeout=10) == payload
    assert codec.decode((await ref.record()).result) == payload
