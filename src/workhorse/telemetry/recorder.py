"""The recording core of workhorse's metrics: one per app, fed by the app's lifecycle hooks
and by its result subscriptions' drops, writing every measurement to each output installed
(an OpenTelemetry meter, a Prometheus registry). The outputs only translate: with both on,
each event is still counted once per output, never twice in one.

The catalogue of metrics lives here too, so both outputs name and describe them alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from workhorse.backends.base import State
from workhorse.hooks import JobEvent
from workhorse.results import Result, on_drop
from workhorse.telemetry.queue_sampler import QueueSampler

if TYPE_CHECKING:
    from workhorse.app import App

#: A measurement's labels (OpenTelemetry attributes): label name to value.
Labels = Mapping[str, str | int]


class Kind(enum.Enum):
    """How a metric is measured."""

    #: Only goes up (OpenTelemetry Counter, Prometheus Counter).
    COUNTER = "counter"
    #: Goes up and down with events (OpenTelemetry UpDownCounter, Prometheus Gauge).
    UPDOWN = "updown"
    #: A distribution of seconds (Histogram in both).
    HISTOGRAM = "histogram"
    #: Read from the store when collected (OpenTelemetry ObservableGauge, Prometheus Gauge).
    GAUGE = "gauge"


@dataclasses.dataclass(frozen=True)
class Metric:
    """One metric of the catalogue; ``key`` is dotted, e.g. ``jobs.enqueued``."""

    key: str
    kind: Kind
    labels: tuple[str, ...]
    #: UCUM unit: "s" for seconds, "{job}" style annotations for counts.
    unit: str
    description: str

    @property
    def otel_name(self) -> str:
        """``workhorse.jobs.enqueued``."""
        return f"workhorse.{self.key}"

    @property
    def prometheus_name(self) -> str:
        """``workhorse_jobs_enqueued`` (the client adds ``_total`` to counters), with a
        ``_seconds`` suffix for metrics in seconds."""
        base = "workhorse_" + self.key.replace(".", "_")
        return base + "_seconds" if self.unit == "s" else base


_JOB = ("name", "queue")
_RUN = ("name", "queue", "status")

ENQUEUED = Metric("jobs.enqueued", Kind.COUNTER, _JOB, "{job}",
                  "Jobs the store accepted (duplicates of unique jobs are not), in this process")
RUNNING = Metric("jobs.running", Kind.UPDOWN, _JOB, "{job}", "Runs in progress in this process")
COMPLETED = Metric("jobs.completed", Kind.COUNTER, _RUN, "{run}",
                   "Runs that ended with success (the job SUCCEEDED)")
FAILED = Metric("jobs.failed", Kind.COUNTER, _RUN, "{run}",
                "Runs that ended with a failure status (the job goes RETRYING or DEAD)")
RETRIED = Metric("jobs.retried", Kind.COUNTER, _RUN, "{run}",
                 "Failed runs whose job was scheduled for another attempt (RETRYING)")
DEAD = Metric("jobs.dead", Kind.COUNTER, _RUN, "{run}",
              "Failed runs whose job went DEAD (no retry left, or a status never retried)")
CANCELLED = Metric("jobs.cancelled", Kind.COUNTER, _RUN, "{run}",
                   "Runs that ended CANCELLED (cancelled while running, or status 499)")
DURATION = Metric("job.duration", Kind.HISTOGRAM, _JOB, "s",
                  "Seconds each run took, from its start to its outcome")
WAIT = Metric("job.wait", Kind.HISTOGRAM, _JOB, "s",
              "Seconds from when a run was due (enqueued, scheduled or retry time) to its start")
RESULTS_DROPPED = Metric("results.dropped", Kind.COUNTER, (), "{result}",
                         "Results lost to a full result-subscription buffer, in this process")
QUEUE_DEPTH = Metric("queue.depth", Kind.GAUGE, ("queue", "state"), "{job}",
                     "Jobs in the store per queue and state")
QUEUE_LATENCY = Metric("queue.latency", Kind.GAUGE, ("queue",), "s",
                       "Seconds the oldest READY job of the queue has waited (0: none ready)")

#: Every metric, in the order the docs list them.
CATALOGUE = (ENQUEUED, RUNNING, COMPLETED, FAILED, RETRIED, DEAD, CANCELLED, DURATION, WAIT,
             RESULTS_DROPPED, QUEUE_DEPTH, QUEUE_LATENCY)

#: Histogram bucket bounds in seconds: jobs run from milliseconds to an hour.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
           300.0, 600.0, 1800.0, 3600.0)

#: The run counters a finish adds to, by the state its job goes to.
_FINISHED: dict[State, tuple[Metric, ...]] = {
    State.SUCCEEDED: (COMPLETED,),
    State.RETRYING: (FAILED, RETRIED),
    State.DEAD: (FAILED, DEAD),
    State.CANCELLED: (CANCELLED,),
}


class Output(Protocol):
    """Where the core writes measurements: an OpenTelemetry meter or a Prometheus registry."""

    def record(self, metric: Metric, value: float, labels: Labels) -> None:
        """Add ``value`` to a COUNTER or UPDOWN metric, or observe it in a HISTOGRAM."""


class JobMetrics:
    """The recording core of one app: ``job_metrics(app)`` makes it and hooks it in."""

    def __init__(self, app: App) -> None:
        self.outputs: list[Output] = []
        #: The store's queue counts, for the GAUGE metrics.
        self.queues = QueueSampler(app)
        #: Extras an output keeps once per app (the Prometheus registry), by name.
        self.extras: dict[str, object] = {}
        self._lock = threading.Lock()

    def add_output(self, output: Output) -> None:
        """Write every measurement from now on to ``output`` too."""
        with self._lock:
            self.outputs = [*self.outputs, output]

    def _record(self, metric: Metric, value: float, labels: Labels) -> None:
        for output in self.outputs:
            output.record(metric, value, labels)

    def on_queued(self, event: JobEvent) -> None:
        self.queues.saw_loop()
        self._record(ENQUEUED, 1, {"name": event.name, "queue": event.queue})

    def on_start(self, event: JobEvent) -> None:
        self.queues.saw_loop()
        labels = {"name": event.name, "queue": event.queue}
        self._record(RUNNING, 1, labels)
        due = event.run_at if event.run_at is not None else event.enqueued_at
        if due is not None:
            started = event.started_at if event.started_at is not None else time.time()
            # The store's clock and this one may differ a little: never a negative wait.
            self._record(WAIT, max(0.0, started - due), labels)

    def on_finish(self, event: JobEvent) -> None:
        labels = {"name": event.name, "queue": event.queue}
        self._record(RUNNING, -1, labels)
        counters = _FINISHED.get(event.state) if event.state is not None else None
        if not counters:  # handed back by a stopping worker, or its lease lost: no outcome
            return
        if event.duration is not None:
            self._record(DURATION, max(0.0, event.duration), labels)
        run: dict[str, str | int] = {**labels, "status": int(event.status)}
        for metric in counters:
            self._record(metric, 1, run)

    def on_drop(self, _result: Result) -> None:
        self._record(RESULTS_DROPPED, 1, {})


_cores: weakref.WeakKeyDictionary[App, JobMetrics] = weakref.WeakKeyDictionary()
_cores_lock = threading.Lock()


def job_metrics(app: App, *, loop: asyncio.AbstractEventLoop | None = None) -> JobMetrics:
    """The recording core of ``app``, made and hooked into its lifecycle hooks on the first
    call. ``loop``: the event loop the app's store lives on (the worker's), from which the
    queue gauges are read; by default the loop of the latest job event."""
    with _cores_lock:
        core = _cores.get(app)
        if core is None:
            core = _cores[app] = JobMetrics(app)
            app.hooks(on_queued=core.on_queued, on_start=core.on_start,
                      on_finish=core.on_finish)
            on_drop(app, core.on_drop)
    if loop is not None:
        core.queues.bind(loop)
    return core
