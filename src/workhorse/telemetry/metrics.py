"""Job metrics through an OpenTelemetry MeterProvider (``app.instrument(meter_provider=...)``).

Only the OpenTelemetry *API* is used: the application picks the SDK, readers and exporters.
Instruments are named ``workhorse.<key>`` (``workhorse.jobs.completed``...), with the same
attributes as the Prometheus labels; docs/metrics.md lists them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from workhorse.telemetry.recorder import (
    BUCKETS,
    CATALOGUE,
    QUEUE_DEPTH,
    QUEUE_LATENCY,
    Kind,
    Labels,
    Metric,
    job_metrics,
)

if TYPE_CHECKING:
    from workhorse.app import App
    from workhorse.backends.base import QueueStats
    from workhorse.telemetry.queue_sampler import QueueSampler

#: Seconds one read of the store's queue stats serves both queue gauges: a collection calls
#: their callbacks one after the other, and each would otherwise ask the store again.
SHARED_READ = 1.0


def install_metrics(app: App, meter_provider: Any) -> None:
    """Report ``app``'s job metrics through ``meter_provider`` (an OpenTelemetry
    MeterProvider); installing the same provider again does nothing."""
    try:
        from opentelemetry.metrics import MeterProvider
    except ImportError as exc:
        raise ImportError("metrics need OpenTelemetry: install workhorse[otel]") from exc
    if not isinstance(meter_provider, MeterProvider):
        raise TypeError(f"meter_provider must be an OpenTelemetry MeterProvider, "
                        f"not {meter_provider!r}")
    core = job_metrics(app)
    installed = core.extras.setdefault("otel_providers", [])
    assert isinstance(installed, list)
    if any(known is meter_provider for known in installed):
        return
    installed.append(meter_provider)
    core.add_output(OtelOutput(meter_provider, core.queues))


class OtelOutput:
    """The catalogue as instruments of one meter; the queue gauges read ``queues``."""

    def __init__(self, meter_provider: Any, queues: QueueSampler) -> None:
        from opentelemetry.metrics import CallbackOptions, Observation

        from workhorse import __version__

        meter = meter_provider.get_meter("workhorse", __version__)
        self._queues = queues
        self._read_at = float("-inf")
        self._stats: list[QueueStats] = []
        self._read_lock = threading.Lock()
        self._instruments: dict[str, Any] = {}
        for metric in CATALOGUE:
            if metric.kind is Kind.COUNTER:
                made = meter.create_counter(metric.otel_name, metric.unit, metric.description)
            elif metric.kind is Kind.UPDOWN:
                made = meter.create_up_down_counter(metric.otel_name, metric.unit,
                                                    metric.description)
            elif metric.kind is Kind.HISTOGRAM:
                made = meter.create_histogram(metric.otel_name, metric.unit, metric.description,
                                              explicit_bucket_boundaries_advisory=list(BUCKETS))
            else:
                continue
            self._instruments[metric.key] = made

        def depth(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(count, {"queue": stats.name, "state": state.value})
                    for stats in self._queue_stats() for state, count in stats.counts.items()]

        def latency(_options: CallbackOptions) -> Iterable[Observation]:
            return [Observation(stats.latency, {"queue": stats.name})
                    for stats in self._queue_stats()]

        meter.create_observable_gauge(QUEUE_DEPTH.otel_name, [depth], QUEUE_DEPTH.unit,
                                      QUEUE_DEPTH.description)
        meter.create_observable_gauge(QUEUE_LATENCY.otel_name, [latency], QUEUE_LATENCY.unit,
                                      QUEUE_LATENCY.description)

    def _queue_stats(self) -> list[QueueStats]:
        """The store's queue stats, read once for the two gauges of a collection."""
        with self._read_lock:  # a second reader's collection waits for this read, not twice
            if time.monotonic() - self._read_at >= SHARED_READ:
                self._stats = self._queues.read()
                self._read_at = time.monotonic()
            return self._stats

    def record(self, metric: Metric, value: float, labels: Labels) -> None:
        instrument = self._instruments[metric.key]
        if metric.kind is Kind.HISTOGRAM:
            instrument.record(value, dict(labels))
        else:
            instrument.add(value, dict(labels))
