"""Metrics as Prometheus collectors: in-process beside an OpenTelemetry provider (each counts
once), and scraped from `workhorse worker --metrics-port` after known work, while its store
runs and after it stops."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

import workhorse as wh
from tests.faults.servers import RedisServer, spare_port
from tests.http_probe import get, wait_for_status
from tests.telemetry.metrics_helpers import (
    EXPECTED_DEPTH,
    EXPECTED_RUN_COUNTS,
    EXPECTED_RUNS,
    WAIT,
    enqueue_batch,
    histogram_counts,
    prometheus_runs,
    prometheus_samples,
    run_batch,
    wait_finished,
)
from tests.telemetry.metricsapp import register_handlers
from tests.telemetry.test_metrics_otel import read_points, runs
from workhorse.telemetry.prometheus import prometheus_metrics

ROOT = Path(__file__).resolve().parents[2]


def depth_of(samples):
    return {(dict(labels)["queue"], dict(labels)["state"]): value
            for (name, labels), value in samples.items()
            if name == "workhorse_queue_depth" and value}


async def test_prometheus_and_opentelemetry_together_each_count_every_run_once():
    reader = InMemoryMetricReader()
    app = wh.App("memory://")
    register_handlers(app)
    app.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    metrics = prometheus_metrics(app, loop=asyncio.get_running_loop())
    assert prometheus_metrics(app) is metrics  # one registry per app
    try:
        await run_batch(app)
        page = (await asyncio.to_thread(metrics.route))
        otel = await read_points(reader)
    finally:
        await app.close()
    status, content_type, body = page
    assert (status, content_type.split(";")[0]) == (200, "text/plain")
    samples = prometheus_samples(body.decode())
    assert prometheus_runs(samples) == EXPECTED_RUNS
    assert runs(otel) == EXPECTED_RUNS
    assert histogram_counts(samples, "workhorse_job_duration_seconds") == EXPECTED_RUN_COUNTS
    assert histogram_counts(samples, "workhorse_job_wait_seconds") == EXPECTED_RUN_COUNTS
    assert depth_of(samples) == EXPECTED_DEPTH
    assert samples[("workhorse_queue_latency_seconds", (("queue", "default"),))] == 0


def test_missing_clients_name_the_extra_to_install(monkeypatch):
    app = wh.App("memory://")
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    with pytest.raises(ImportError, match=r"install workhorse\[prometheus\]"):
        prometheus_metrics(app)
    monkeypatch.setitem(sys.modules, "opentelemetry.metrics", None)
    with pytest.raises(ImportError, match=r"install workhorse\[otel\]"):
        app.instrument(meter_provider=object())


def start_worker(url, port):
    env = {**os.environ, "WORKHORSE_URL": url,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "workhorse", "worker", "tests.telemetry.metricsapp:app",
         "--metrics-port", str(port), "--metrics-host", "127.0.0.1"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


async def test_worker_metrics_port_serves_exact_counts_and_outlives_its_store(tmp_path):
    redis = RedisServer(tmp_path)
    redis.start()
    port = spare_port()
    worker = start_worker(redis.url, port)
    base = f"http://127.0.0.1:{port}"
    try:
        await asyncio.to_thread(wait_for_status, base + "/readyz", 200)
        app = wh.App(redis.url)
        try:
            refs = await enqueue_batch(app)
            fan_out = await app.enqueue("fan_out", {"names": ["ada", "bob"]})
            assert fan_out is not None
            children = await fan_out.result(timeout=WAIT)
            await wait_finished([*refs, *map(app.ref, children)])
        finally:
            await app.close()
        status, text = await asyncio.to_thread(get, base + "/metrics")
        assert status == 200, text
        samples = prometheus_samples(text)

        redis.stop()
        await asyncio.to_thread(wait_for_status, base + "/readyz", 503)
        status, text = await asyncio.to_thread(get, base + "/metrics")
        assert status == 200, text
        without_store = prometheus_samples(text)
        redis.start()  # back, so the worker stops at once rather than retrying the store
        await asyncio.to_thread(wait_for_status, base + "/readyz", 200)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            _, err = worker.communicate(timeout=60)
        finally:
            redis.stop()
    assert worker.returncode == 0, err

    greet = (("name", "greet"), ("queue", "default"), ("status", "200"))
    fanned = (("name", "fan_out"), ("queue", "default"), ("status", "200"))
    assert prometheus_runs(samples) == {**EXPECTED_RUNS, ("completed", greet): 3 + 2,
                                       ("completed", fanned): 1}
    # Enqueues count where they happen: here, the two greets fan_out enqueued in the worker.
    enqueued = {dict(labels)["name"]: value for (name, labels), value in samples.items()
                if name == "workhorse_jobs_enqueued_total"}
    assert enqueued == {"greet": 2}
    assert {value for (name, _), value in samples.items()
            if name == "workhorse_jobs_running"} == {0}
    assert histogram_counts(samples, "workhorse_job_duration_seconds") == {
        **EXPECTED_RUN_COUNTS, "greet": 5, "fan_out": 1}
    assert depth_of(samples) == {**EXPECTED_DEPTH, ("default", "succeeded"): 4 + 3}
    assert samples[("workhorse_results_dropped_total", ())] == 0

    # The store away: the counters are still told; the queue gauges, unknown, are left out.
    assert prometheus_runs(without_store) == prometheus_runs(samples)
    assert depth_of(without_store) == {}
    assert not any(name.startswith("workhorse_queue_") for name, _ in without_store)
