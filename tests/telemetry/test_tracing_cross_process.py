"""A job's run span, ended in a worker process, is the child of its enqueue span, ended in
the producer's process: the W3C trace context crosses the store in the job's headers."""

import json
import subprocess
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import workhorse as wh
from tests.conformance.conftest import BACKENDS, cleanup
from tests.faults.procs import start_worker, wait_for

HERE = Path(__file__).resolve().parent


def run_spans(log: Path) -> list[dict]:
    if not log.exists():
        return []
    spans = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [span for span in spans if span["name"] == "run thumbnail"]


@pytest.mark.parametrize("store", ["redis", "postgresql"])
async def test_run_span_in_a_worker_process_is_the_child_of_the_enqueue_span(store, tmp_path):
    url = BACKENDS[store](tmp_path)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = wh.App(url)
    app.instrument(tracer_provider=provider)
    span_log = tmp_path / "spans.jsonl"
    worker: subprocess.Popen[bytes] | None = None
    try:
        tracer = trace.get_tracer("test", tracer_provider=provider)
        with tracer.start_as_current_span("upload"):
            ref = await app.enqueue("thumbnail", {"size": 640}, queue="images")
        worker = start_worker(url, tmp_path / "attempts.log", "--queues", "images",
                              app="app_traced:app", extra_env={"SPAN_LOG": str(span_log),
                                                         "PYTHONPATH": str(HERE)})
        assert await ref.result(timeout=30) == {"size": 320}
        wait_for(lambda: bool(run_spans(span_log)), 10, "the worker's run span")
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        await app.close()
        await cleanup(url)
        provider.shutdown()

    [enqueue] = [s for s in exporter.get_finished_spans() if s.name == "enqueue thumbnail"]
    [run] = run_spans(span_log)
    assert run["context"]["trace_id"] == f"0x{enqueue.context.trace_id:032x}"
    assert run["parent_id"] == f"0x{enqueue.context.span_id:016x}"
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["attributes"]["messaging.message.id"] == ref.id
    assert run["attributes"]["workhorse.job.attempt"] == 1
    assert run["attributes"]["workhorse.job.status"] == 200
