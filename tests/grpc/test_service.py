"""The job service over a real localhost channel: enqueue, follow, stream, steer."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest

import workhorse as wh
from tests.grpc.conftest import bounded
from workhorse.grpc._proto.workhorse.v1 import jobs_pb2


def handlers(app: wh.App) -> dict[str, asyncio.Event]:
    """Register the test handlers; returns the events the ``hold`` handler uses."""
    events = {"started": asyncio.Event(), "release": asyncio.Event()}

    @app.handler("add")
    async def add(job: wh.Job) -> dict:
        return {"sum": job.args["a"] + job.args["b"],
                "correlation": job.headers.get("correlation-id"),
                "tenant": job.headers.get("tenant")}

    @app.handler("fail", retries=0)
    async def fail(job: wh.Job) -> None:
        raise wh.JobError(400, "bad input")

    @app.handler("hold")
    async def hold(job: wh.Job) -> str:
        events["started"].set()
        await events["release"].wait()
        return "released"

    return events


async def test_enqueued_job_runs_and_its_result_streams(app, serve, connect, worker):
    handlers(app)
    client = connect(await serve(app))
    async with client.results(names=["add"], timeout=10) as results:
        job_id = await client.enqueue("add", {"a": 2, "b": 3}, correlation_id="c-42",
                                      metadata={"tenant": "acme"})
        await worker(app)
        result = await bounded(anext(results))
    assert (result.job_id, result.name, result.status) == (job_id, "add", 200)
    assert result.state == jobs_pb2.STATE_SUCCEEDED
    assert json.loads(result.json_result) == {"sum": 5, "correlation": "c-42",
                                              "tenant": "acme"}
    job = await client.get_job(job_id)
    assert (job.name, job.correlation_id, dict(job.metadata)) == ("add", "c-42",
                                                                 {"tenant": "acme"})
    assert json.loads(job.json_args) == {"a": 2, "b": 3}
    assert job.finished_at.seconds > 0
    assert await client.state(job_id) is wh.State.SUCCEEDED
    assert await bounded(client.result(job_id)) == json.loads(result.json_result)


async def test_stream_filters_by_job_id_and_reports_failures(app, serve, connect, worker):
    handlers(app)
    client = connect(await serve(app))
    # One at a time, the other job first: unfiltered, the stream would start with it.
    first, wanted = await client.enqueue_many([
        wh.grpc.job_spec("add", {"a": 1, "b": 1}, priority=10), wh.grpc.job_spec("fail")])
    async with client.results(job_ids=[wanted], timeout=10) as results:
        await worker(app, concurrency=1)
        result = await bounded(anext(results))
    assert await bounded(client.result(first)) == {"sum": 2, "correlation": None,
                                                   "tenant": None}
    assert result.job_id == wanted
    assert (result.state, result.status, result.error) == (jobs_pb2.STATE_DEAD, 400,
                                                           "bad input")
    with pytest.raises(wh.JobFailed) as failed:
        await bounded(client.result(wanted))
    assert failed.value.status == 400


async def test_batch_options_reach_the_store(app, serve, connect):
    handlers(app)
    client = connect(await serve(app))
    at = time.time() + 3600
    specs = [
        wh.grpc.job_spec("add", {"a": 1, "b": 2}, queue="math", priority=7,
                         idempotency_key="once"),
        wh.grpc.job_spec("add", {"a": 1, "b": 2}, queue="math", idempotency_key="once"),
        wh.grpc.job_spec("add", {"a": 5, "b": 5}, delay=600, job_timeout=2.5),
        wh.grpc.job_spec("add", {"a": 6, "b": 6}, at=at, unique=True),
        wh.grpc.job_spec("add", {"a": 6, "b": 6}, unique=True),
    ]
    first, again, delayed, scheduled, duplicate = await client.enqueue_many(specs)
    assert again == first and duplicate is None
    job = await client.get_job(first)
    assert (job.queue, job.priority, job.state) == ("math", 7, jobs_pb2.STATE_READY)
    assert (await client.get_job(delayed)).state == jobs_pb2.STATE_SCHEDULED
    stored = await app.admin.job(scheduled)
    assert stored is not None and abs(stored.run_at - at) < 0.001
    assert (await app.ref(delayed).record()).timeout == 2.5
    queues = {q.name: q for q in await client.queues()}
    assert queues["math"].counts["ready"] == 1
    assert queues["default"].counts["scheduled"] == 2
    stats = await client.stats()
    assert stats.counts["ready"] == 1 and stats.counts["scheduled"] == 2


@pytest.mark.parametrize(("spec", "reason"), [
    (jobs_pb2.JobSpec(name="add", json_args="{not json"), "not JSON"),
    (jobs_pb2.JobSpec(name=""), "needs a name"),
    (jobs_pb2.JobSpec(name="add", metadata={"correlation-id": "x"}), "may not set"),
])
async def test_a_bad_spec_fails_the_whole_batch(app, serve, connect, spec, reason):
    client = connect(await serve(app))
    good = wh.grpc.job_spec("add", {"a": 1, "b": 2})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.enqueue_many([good, spec])
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert reason in refused.value.details()
    assert (await app.admin.stats()).counts["ready"] == 0


async def test_unknown_jobs_are_not_found(app, serve, connect):
    client = connect(await serve(app))
    for call in (client.get_job("nope"), client.cancel("nope"), client.retry("nope")):
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call
        assert missing.value.code() is grpc.StatusCode.NOT_FOUND


async def test_cancel_retry_pause_and_resume(app, serve, connect, worker):
    handlers(app)
    client = connect(await serve(app))
    job_id = await client.enqueue("add", {"a": 1, "b": 2})
    assert await client.cancel(job_id) is wh.State.CANCELLED
    await client.retry(job_id)
    assert await client.state(job_id) is wh.State.READY
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await client.retry(job_id)
    assert refused.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    await client.pause("default")
    assert [q.paused for q in await client.queues() if q.name == "default"] == [True]
    assert (await client.stats()).paused == ["default"]
    await client.resume("default")
    assert await app.paused() == set()
    with pytest.raises(grpc.aio.AioRpcError) as nameless:
        await client.pause("")
    assert nameless.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    await worker(app)
    assert await bounded(client.result(job_id)) == {"sum": 3, "correlation": None,
                                                    "tenant": None}


async def test_a_stream_deadline_leaves_the_job_running(app, serve, connect, worker):
    events = handlers(app)
    client = connect(await serve(app))
    await worker(app)
    job_id = await client.enqueue("hold")
    await bounded(events["started"].wait())
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        async with client.results(job_ids=[job_id], timeout=0.3) as results:
            await bounded(anext(results))
    assert expired.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(TimeoutError):
        await client.result(job_id, timeout=0.3)
    assert await client.state(job_id) is wh.State.RUNNING
    events["release"].set()
    assert await bounded(client.result(job_id)) == "released"


async def test_cancel_job_cancels_a_running_job(app, serve, connect, worker):
    events = handlers(app)
    client = connect(await serve(app))
    await worker(app, lease=0.6)
    job_id = await client.enqueue("hold")
    await bounded(events["started"].wait())
    assert await client.cancel(job_id) is wh.State.RUNNING
    with pytest.raises(wh.JobFailed) as cancelled:
        await bounded(client.result(job_id))
    assert cancelled.value.status == 499
    assert await client.state(job_id) is wh.State.CANCELLED


async def test_an_unreachable_store_is_unavailable(tmp_path, serve, connect):
    app = wh.App("sqlite:///" + str(tmp_path / "missing" / "dir" / "g.db"))
    client = connect(await serve(app))
    with pytest.raises(grpc.aio.AioRpcError) as down:
        await client.enqueue("add", {"a": 1})
    assert down.value.code() is grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as stream_down:
        async with client.results(timeout=5):
            pass
    assert stream_down.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_an_unexpected_error_is_internal_and_logged_without_the_request(
        app, serve, connect, caplog, monkeypatch):
    async def broken(requests, **options):
        raise RuntimeError(f"boom with {requests[0].args}")

    monkeypatch.setattr(app, "enqueue_many", broken)
    client = connect(await serve(app))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await client.enqueue("add", {"card": "4111-private"})
    assert failed.value.code() is grpc.StatusCode.INTERNAL
    assert "RuntimeError" in caplog.text
    assert "4111-private" not in caplog.text and "4111-private" not in failed.value.details()


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_stopping_ends_open_result_streams_without_waiting_the_grace(app, serve, connect):
    server = await serve(app)
    client = connect(server)
    async with client.results(timeout=30) as results:
        # A stream never ends on its own: the stop would wait out its grace without ending it.
        await bounded(server.stop(grace=60))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            await bounded(anext(results))
    assert ended.value.code() is grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_a_second_server_cannot_take_a_busy_port(app, serve):
    first = await serve(app)
    other = wh.App("memory://")
    second = wh.grpc.Server(other, port=first.port, host="127.0.0.1")
    try:
        with pytest.raises(OSError, match="cannot listen"):
            await second.start()
    finally:
        await second.stop(grace=None)
        await other.close()


@pytest.mark.parametrize("app", ["memory"], indirect=True)
async def test_an_enqueue_continues_the_callers_trace(app, serve, connect):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app.instrument(tracer_provider=provider)
    handlers(app)
    trace_id, span_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    caller = connect(await serve(app), metadata={
        "traceparent": f"00-{trace_id:032x}-{span_id:016x}-01"})
    await caller.enqueue("add", {"a": 1, "b": 2})
    [span] = [s for s in exporter.get_finished_spans() if s.name == "enqueue add"]
    assert (span.parent.trace_id, span.parent.span_id) == (trace_id, span_id)
    provider.shutdown()
