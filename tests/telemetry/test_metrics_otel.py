"""Metrics through an OpenTelemetry MeterProvider, read with the SDK's InMemoryMetricReader
after known work, on every kind of store (Redis in a private namespace)."""

import asyncio
from collections import Counter
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import workhorse as wh
from tests.conformance.conftest import REDIS_URL, cleanup, private_namespace
from tests.telemetry.metrics_helpers import (
    EXPECTED_DEPTH,
    EXPECTED_RUN_COUNTS,
    EXPECTED_RUNS,
    WAIT,
    run_batch,
)
from tests.telemetry.metricsapp import register_handlers
from workhorse.results import on_drop

Points = dict[tuple[str, tuple[tuple[str, str], ...]], Any]

STORES = {
    "memory": lambda tmp_path: "memory://",
    "sqlite": lambda tmp_path: "sqlite:///" + str(tmp_path / "metrics.db"),
    "redis": private_namespace(REDIS_URL, "namespace"),
}


@pytest.fixture(params=list(STORES))
async def url(request, tmp_path):
    store_url = STORES[request.param](tmp_path)
    yield store_url
    await cleanup(store_url)


async def read_points(reader: InMemoryMetricReader) -> Points:
    """Collect from another thread, as a periodic reader does (the queue gauges are read
    on the app's loop, which the collecting thread waits for)."""
    data = await asyncio.to_thread(reader.get_metrics_data)
    points: Points = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    labels = tuple(sorted((k, str(v)) for k, v in point.attributes.items()))
                    value = point.count if hasattr(point, "bucket_counts") else point.value
                    points[(metric.name, labels)] = value
    return points


def runs(points: Points) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    return {(name.removeprefix("workhorse.jobs."), labels): value
            for (name, labels), value in points.items()
            if name in {"workhorse.jobs.completed", "workhorse.jobs.failed",
                        "workhorse.jobs.retried", "workhorse.jobs.dead",
                        "workhorse.jobs.cancelled"} and value}


def per_name(points: Points, metric: str) -> Counter[str]:
    return Counter({dict(labels)["name"]: value for (name, labels), value in points.items()
                    if name == metric})


def instrumented(url: str) -> tuple[wh.App, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    app = wh.App(url)
    register_handlers(app)
    app.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    return app, reader


async def test_a_worker_s_runs_are_counted_exactly_by_name_queue_and_status(url):
    app, reader = instrumented(url)
    try:
        await run_batch(app)
        points = await read_points(reader)
    finally:
        await app.close()

    assert runs(points) == EXPECTED_RUNS
    assert per_name(points, "workhorse.jobs.enqueued") == {
        "greet": 4, "reject": 2, "flaky": 1, "give_up": 1}
    assert set(per_name(points, "workhorse.jobs.running").values()) == {0}
    assert per_name(points, "workhorse.job.duration") == EXPECTED_RUN_COUNTS
    assert per_name(points, "workhorse.job.wait") == EXPECTED_RUN_COUNTS
    depth = {(dict(labels)["queue"], dict(labels)["state"]): value
             for (name, labels), value in points.items()
             if name == "workhorse.queue.depth" and value}
    assert depth == EXPECTED_DEPTH
    assert points[("workhorse.queue.latency", (("queue", "default"),))] == 0


async def test_results_dropped_by_a_full_subscription_are_counted(url):
    app, reader = instrumented(url)
    drops = []
    all_dropped = asyncio.Event()

    def told(result: wh.Result) -> None:  # called after the metrics' own listener
        drops.append(result)
        if len(drops) == 4 + 3:
            all_dropped.set()

    on_drop(app, told)
    worker = wh.Worker(app, poll_interval=0.02, log_runs=False)
    try:
        async with app.subscribe_results(1) as newest, \
                app.subscribe_results(2, drop=wh.Drop.OLDEST) as oldest:
            await worker.start()
            refs = await app.enqueue_many([wh.Job("greet", args={"name": str(i)})
                                           for i in range(5)])
            for ref in refs:
                assert ref is not None
                await ref.result(timeout=WAIT)

            await asyncio.wait_for(all_dropped.wait(), WAIT)
            points = await read_points(reader)
    finally:
        await worker.stop()
        await app.close()
    assert (newest.dropped, oldest.dropped) == (4, 3)
    assert points[("workhorse.results.dropped", ())] == 7


async def test_local_worker_runs_are_counted_and_a_failed_run_is_dead():
    app, reader = instrumented("memory://")
    async with wh.LocalWorker(app, log_runs=False) as worker:
        for name in ("greet", "reject", "flaky", "give_up"):
            await worker.perform(wh.Job(name, args={"name": "x"}), sync=True)
    points = await read_points(reader)
    assert runs(points) == {
        ("completed", (("name", "greet"), ("queue", "default"), ("status", "200"))): 1,
        ("failed", (("name", "reject"), ("queue", "default"), ("status", "400"))): 1,
        ("dead", (("name", "reject"), ("queue", "default"), ("status", "400"))): 1,
        # In-process runs are never retried: a 503 goes dead at once.
        ("failed", (("name", "flaky"), ("queue", "default"), ("status", "503"))): 1,
        ("dead", (("name", "flaky"), ("queue", "default"), ("status", "503"))): 1,
        ("cancelled", (("name", "give_up"), ("queue", "default"), ("status", "499"))): 1,
    }
    assert per_name(points, "workhorse.jobs.enqueued") == {
        "greet": 1, "reject": 1, "flaky": 1, "give_up": 1}
    assert per_name(points, "workhorse.job.duration") == {
        "greet": 1, "reject": 1, "flaky": 1, "give_up": 1}


async def test_instrumenting_twice_with_one_provider_counts_once():
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    app = wh.App("memory://")
    register_handlers(app)
    app.instrument(meter_provider=provider)
    app.instrument(meter_provider=provider)
    async with wh.LocalWorker(app, log_runs=False) as worker:
        await worker.perform(wh.Job("greet", args={"name": "x"}), sync=True)
    points = await read_points(reader)
    assert per_name(points, "workhorse.jobs.completed") == {"greet": 1}


def test_a_meter_provider_must_be_one():
    with pytest.raises(TypeError, match="MeterProvider"):
        wh.App("memory://").instrument(meter_provider=object())


async def test_one_collection_reads_the_store_s_queue_stats_once():
    app, reader = instrumented("memory://")
    backend = await app.backend()
    store_queue_stats = backend.queue_stats
    reads = []

    async def counted():  # the real store's answer, counted
        reads.append(1)
        return await store_queue_stats()

    backend.queue_stats = counted
    try:
        await app.enqueue("greet", {"name": "x"})
        points = await read_points(reader)
    finally:
        await app.close()
    assert points[("workhorse.queue.depth", (("queue", "default"), ("state", "ready")))] == 1
    assert ("workhorse.queue.latency", (("queue", "default"),)) in points
    assert len(reads) == 1
