"""Job tracing through OpenTelemetry: a span for each enqueue and each run.

The enqueue span (kind PRODUCER) puts its trace context in the job's headers, through the
globally configured propagator (W3C ``traceparent``/``tracestate`` and baggage by default);
the run span (kind CONSUMER) is started from those headers, so in any process, on any store,
a job's runs are children of its enqueue. Spans
follow OpenTelemetry's messaging conventions (``messaging.system`` = ``workhorse``, the
queue as ``messaging.destination.name``, the job id as ``messaging.message.id``) and add
``workhorse.job.name``, ``workhorse.job.attempt`` and, on runs, ``workhorse.job.status``.
A run whose status is not a success has its span status set to ERROR, and an exception
escaping the handler is recorded on the span.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from workhorse.backends.base import Enqueued, NewJob
from workhorse.chain import status_for_exception
from workhorse.job import Job
from workhorse.status import Outcome, Status
from workhorse.types import Handler

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    from workhorse.app import App

SYSTEM = "workhorse"


def install_tracing(app: App, tracer_provider: Any) -> None:
    """Trace ``app``'s enqueues and runs through ``tracer_provider``."""
    app.set_tracing(Tracing(tracer_provider))


@dataclasses.dataclass(frozen=True)
class EnqueueSpans:
    """The jobs of one traced enqueue (trace context in their headers) and their spans."""

    jobs: list[NewJob]
    spans: list[Span]

    def outcomes(self, results: Sequence[Enqueued]) -> None:
        """Note on each span what the store did: ``workhorse.enqueue.outcome`` (created,
        existing, duplicate) and, for a job that was not created, the id of the live job
        the caller was given instead."""
        for span, job, result in zip(self.spans, self.jobs, results, strict=True):
            span.set_attribute("workhorse.enqueue.outcome", result.outcome.value)
            if result.id != job.id:
                span.set_attribute("messaging.message.id", result.id)


class Tracing:
    """The spans of one app: ``enqueuing`` wraps a store write, ``adapter`` a run."""

    def __init__(self, tracer_provider: Any) -> None:
        try:
            from opentelemetry import propagate
        except ImportError as exc:  # pragma: no cover - the extra is part of [all]
            raise ImportError("tracing needs OpenTelemetry: install workhorse[otel]") from exc
        from workhorse import __version__

        self.tracer: Tracer = tracer_provider.get_tracer("workhorse", __version__)
        # The globally configured propagator (W3C trace context and baggage unless the
        # application set another, B3 say), looked up at each use as OpenTelemetry's own
        # instrumentations do.
        self._propagate = propagate

    @contextlib.contextmanager
    def enqueuing(self, jobs: Sequence[NewJob]) -> Iterator[EnqueueSpans]:
        """One PRODUCER span per job, open while the body writes them to the store; yields
        the jobs with each span's trace context added to their headers, and a way to tell
        the spans what the store did (``outcomes``).

        A job whose headers already hold a ``traceparent`` (work handed on from another
        traced system, a gRPC caller say) gets a span that is a child of that context.
        """
        from opentelemetry import trace

        spans: list[Span] = []
        traced: list[NewJob] = []
        for job in jobs:
            headers = dict(job.headers)
            parent = self._parent(headers)
            attributes = _attributes(job.name, job.queue, "send")
            attributes["messaging.message.id"] = job.id
            span = self.tracer.start_span(f"enqueue {job.name}", context=parent,
                                          kind=trace.SpanKind.PRODUCER, attributes=attributes)
            for name in self._propagate.get_global_textmap().fields:
                headers.pop(name, None)
            self._propagate.inject(headers, context=trace.set_span_in_context(span))
            spans.append(span)
            traced.append(dataclasses.replace(job, headers=headers))
        try:
            yield EnqueueSpans(traced, spans)
        except BaseException as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            for span in spans:
                span.end()

    def _parent(self, headers: Mapping[str, str]) -> Context | None:
        """The context carried in ``headers``, or None (the current one) if they carry
        none: an in-process run then nests under its caller's span."""
        fields = self._propagate.get_global_textmap().fields
        if not any(name in headers for name in fields):
            return None
        return self._propagate.extract(headers)

    def adapter(self, handler: Handler) -> Handler:
        """The outermost link of every chain: runs the handler inside a CONSUMER span whose
        parent is the trace context in the job's headers."""
        from opentelemetry import trace

        tracer = self.tracer
        parent_of = self._parent

        async def traced(job: Job[Any]) -> Any:
            parent = parent_of(job.headers)
            attributes = _attributes(job.name, job.queue, "process")
            attributes["messaging.message.id"] = job.id
            attributes["workhorse.job.attempt"] = job.attempt
            with tracer.start_as_current_span(
                f"run {job.name}", context=parent, kind=trace.SpanKind.CONSUMER,
                attributes=attributes, record_exception=False, set_status_on_exception=False,
            ) as span:
                try:
                    result = await handler(job)
                except BaseException as exc:
                    _finish(span, status_for_exception(exc), exc)
                    raise
                _finish(span, job.ctx.status, None)
                return result

        return traced


def _attributes(name: str, queue: str, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.destination.name": queue,
        "workhorse.job.name": name,
    }


def _finish(span: Span, status: Status, exc: BaseException | None) -> None:
    from opentelemetry import trace

    span.set_attribute("workhorse.job.status", int(status))
    if exc is not None:
        span.record_exception(exc)
    if status.outcome not in (Outcome.DONE, Outcome.CANCELLED):
        description = f"{int(status)} {status.name}"
        span.set_status(trace.Status(trace.StatusCode.ERROR, description))

