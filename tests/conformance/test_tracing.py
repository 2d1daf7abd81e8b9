"""Tracing, per backend: the run span is the child of the enqueue span through the job's
stored headers; attempt and status are attributes; failures are recorded."""

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import workhorse as wh

from .runtime import running_worker, wait_state


@pytest.fixture
def provider(app: wh.App) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    app.instrument(tracer_provider=provider)
    yield provider
    provider.shutdown()


@pytest.fixture
def spans(provider: TracerProvider) -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def parent_of(span: ReadableSpan) -> tuple[int, int] | None:
    return None if span.parent is None else (span.parent.trace_id, span.parent.span_id)


def ids(span: ReadableSpan) -> tuple[int, int]:
    return span.context.trace_id, span.context.span_id


async def test_the_run_span_is_the_child_of_the_enqueue_span(app, provider, spans):
    @app.handler("resize", queue="images")
    async def resize(job: wh.Job) -> dict:
        return {"ok": True, "headers": sorted(job.headers)}

    tracer = trace.get_tracer("test", tracer_provider=provider)
    with tracer.start_as_current_span("request") as request:
        ref = await app.enqueue("resize", {"w": 10})
    async with running_worker(app):
        result = await ref.result(timeout=10)
    assert "traceparent" in result["headers"]
    [enqueue] = named(spans, "enqueue resize")
    [run] = named(spans, "run resize")
    assert parent_of(enqueue) == ids_of(request)
    assert parent_of(run) == ids(enqueue)
    assert enqueue.kind is SpanKind.PRODUCER and run.kind is SpanKind.CONSUMER
    assert enqueue.attributes["messaging.message.id"] == ref.id
    assert dict(run.attributes) == {
        "messaging.system": "workhorse", "messaging.operation.type": "process",
        "messaging.destination.name": "images", "workhorse.job.name": "resize",
        "messaging.message.id": ref.id, "workhorse.job.attempt": 1,
        "workhorse.job.status": 200,
    }
    assert run.status.status_code is StatusCode.UNSET


async def test_each_attempt_gets_a_run_span_and_failures_are_recorded(app, spans):
    @app.handler("flaky", retries=1, backoff=wh.constant(0.01))
    async def flaky(job: wh.Job) -> str:
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "done"

    ref = await app.enqueue("flaky")
    async with running_worker(app):
        assert await ref.result(timeout=10) == "done"
    [enqueue] = named(spans, "enqueue flaky")
    runs = sorted(named(spans, "run flaky"), key=lambda s: s.attributes["workhorse.job.attempt"])
    assert [s.attributes["workhorse.job.attempt"] for s in runs] == [1, 2]
    assert all(parent_of(s) == ids(enqueue) for s in runs)
    failed, passed = runs
    assert failed.attributes["workhorse.job.status"] == 500
    assert failed.status.status_code is StatusCode.ERROR
    [event] = failed.events
    assert event.name == "exception"
    assert event.attributes["exception.message"] == "first attempt fails"
    assert passed.status.status_code is StatusCode.UNSET and not passed.events


async def test_a_job_status_without_an_exception_marks_the_span(app, spans):
    @app.handler("reject")
    async def reject(job: wh.Job) -> None:
        job.ctx.status = wh.Status.BAD_REQUEST

    ref = await app.enqueue("reject")
    async with running_worker(app):
        assert await wait_state(ref, wh.State.DEAD) is wh.State.DEAD
    [run] = named(spans, "run reject")
    assert run.attributes["workhorse.job.status"] == 400
    assert run.status.status_code is StatusCode.ERROR
    assert run.status.description == "400 BAD_REQUEST"


async def test_a_caller_trace_context_in_headers_becomes_the_parent(app, spans):
    @app.handler("noop")
    async def noop(job: wh.Job) -> None:
        return None

    trace_id, span_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    upstream = f"00-{trace_id:032x}-{span_id:016x}-01"
    ref = await app.enqueue("noop", headers={"traceparent": upstream, "tenant": "acme"})
    async with running_worker(app):
        await wait_state(ref, wh.State.SUCCEEDED)
    [enqueue] = named(spans, "enqueue noop")
    [run] = named(spans, "run noop")
    assert parent_of(enqueue) == (trace_id, span_id)
    assert parent_of(run) == ids(enqueue)
    record = await ref.record()
    assert record.headers["tenant"] == "acme"
    assert record.headers["traceparent"] != upstream


async def test_an_in_process_run_is_the_child_of_the_caller_span(app, provider, spans):
    @app.handler("inline")
    async def inline(job: wh.Job) -> int:
        return 1

    tracer = trace.get_tracer("test", tracer_provider=provider)
    async with wh.LocalWorker(app, log_runs=False) as worker:
        with tracer.start_as_current_span("caller") as caller:
            await worker.perform(wh.Job("inline"), sync=True)
    [run] = named(spans, "run inline")
    assert parent_of(run) == ids_of(caller)
    assert run.attributes["workhorse.job.status"] == 200


def ids_of(span: trace.Span) -> tuple[int, int]:
    context = span.get_span_context()
    return context.trace_id, context.span_id


async def test_an_enqueue_span_tells_what_the_store_did(app, spans):
    app.register("once", lambda job: None)
    first = await app.enqueue("once", {"n": 1}, unique=True)
    assert await app.enqueue("once", {"n": 1}, unique=True) is None
    again = await app.enqueue("once", {"n": 2}, idempotency_key="k")
    assert await app.enqueue("once", {"n": 3}, idempotency_key="k") == again
    created, duplicate, keyed, existing = named(spans, "enqueue once")
    assert [s.attributes["workhorse.enqueue.outcome"] for s in (created, duplicate, keyed,
                                                                existing)] == [
        "created", "duplicate", "created", "existing"]
    # A job not written names the live job the caller was given instead.
    assert duplicate.attributes["messaging.message.id"] == first.id
    assert existing.attributes["messaging.message.id"] == again.id
