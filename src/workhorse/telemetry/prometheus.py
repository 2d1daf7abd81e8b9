"""Job metrics as Prometheus collectors (``pip install workhorse[prometheus]``).

``prometheus_metrics(app)`` gives the app's metrics in a registry of their own;
``workhorse worker --metrics-port`` serves them at ``/metrics``, and an embedding program
routes them wherever it likes::

    server.route("/metrics", prometheus_metrics(app).route)      # a workhorse HealthServer
    prometheus_client.start_http_server(9100, registry=prometheus_metrics(app).registry)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from workhorse.middleware.health import Response
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
    from workhorse.telemetry.queue_sampler import QueueSampler

_KEY = "prometheus"
_made = threading.Lock()


def _client() -> Any:
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImportError("Prometheus metrics need prometheus-client: "
                          "install workhorse[prometheus]") from exc
    return prometheus_client


def prometheus_metrics(app: App, *,
                       loop: asyncio.AbstractEventLoop | None = None) -> PrometheusMetrics:
    """The Prometheus metrics of ``app``, made (and hooked into the app) on the first call;
    later calls return the same. ``loop``: the loop the app's store lives on (the worker's),
    where the queue gauges are read at each scrape; by default the latest job event's."""
    core = job_metrics(app, loop=loop)
    with _made:  # two threads asking at once must not register two outputs
        found = core.extras.get(_KEY)
        if isinstance(found, PrometheusMetrics):
            return found
        metrics = PrometheusMetrics(core.queues)
        core.extras[_KEY] = metrics
        core.add_output(metrics)
    return metrics


class PrometheusMetrics:
    """The metric catalogue as collectors in ``registry``, a CollectorRegistry of its own."""

    def __init__(self, queues: QueueSampler) -> None:
        client = _client()
        #: The registry holding workhorse's collectors (and nothing else).
        self.registry: Any = client.CollectorRegistry()
        self._content_type: str = client.CONTENT_TYPE_LATEST
        self._generate = client.generate_latest
        self._collectors: dict[str, Any] = {}
        for metric in CATALOGUE:
            name, doc, labels = metric.prometheus_name, metric.description, metric.labels
            made: Any
            if metric.kind is Kind.COUNTER:
                made = client.Counter(name, doc, labels, registry=self.registry)
            elif metric.kind is Kind.UPDOWN:
                made = client.Gauge(name, doc, labels, registry=self.registry)
            elif metric.kind is Kind.HISTOGRAM:
                made = client.Histogram(name, doc, labels, registry=self.registry,
                                        buckets=BUCKETS)
            else:
                continue
            self._collectors[metric.key] = made
        self.registry.register(_QueueCollector(queues))

    def record(self, metric: Metric, value: float, labels: Labels) -> None:
        """Write one measurement (called by the recording core)."""
        collector = self._collectors[metric.key]
        if labels:
            collector = collector.labels(**{k: str(v) for k, v in labels.items()})
        if metric.kind is Kind.HISTOGRAM:
            collector.observe(value)
        else:
            collector.inc(value)

    def render(self) -> bytes:
        """The metrics in the Prometheus text format."""
        body: bytes = self._generate(self.registry)
        return body

    def route(self) -> Response:
        """A HealthServer route serving ``render()``: ``server.route("/metrics", m.route)``."""
        return 200, self._content_type, self.render()


class _QueueCollector:
    """The queue gauges, read from the store at each scrape."""

    def __init__(self, queues: QueueSampler) -> None:
        self._queues = queues

    def describe(self) -> Iterator[Any]:
        yield from self._families()

    def collect(self) -> Iterator[Any]:
        yield from self._families(self._queues.read())

    @staticmethod
    def _families(stats: Any = ()) -> Iterator[Any]:
        metrics_core = _client().metrics_core
        depth = metrics_core.GaugeMetricFamily(QUEUE_DEPTH.prometheus_name,
                                               QUEUE_DEPTH.description,
                                               labels=QUEUE_DEPTH.labels)
        latency = metrics_core.GaugeMetricFamily(QUEUE_LATENCY.prometheus_name,
                                                 QUEUE_LATENCY.description,
                                                 labels=QUEUE_LATENCY.labels)
        for queue in stats:
            for state, count in queue.counts.items():
                depth.add_metric([queue.name, state.value], count)
            latency.add_metric([queue.name], queue.latency)
        yield depth
        yield latency
