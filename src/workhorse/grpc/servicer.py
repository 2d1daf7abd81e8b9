"""The ``workhorse.v1.Jobs`` servicer: every call goes through the public ``App`` API.

Embed it in a server of your own with ``add_jobs_service(server, app)``, or run
``wh.grpc.Server`` (which also registers health checking and reflection).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

import grpc
from google.protobuf.message import Message

from workhorse.app import App
from workhorse.errors import JobNotFound, QueueFull, SerializationError, StoreError, StoreFull
from workhorse.grpc._proto.workhorse.v1 import jobs_pb2, jobs_pb2_grpc
from workhorse.grpc.messages import (
    job_message,
    queue_message,
    result_message,
    state_message,
    stats_message,
)
from workhorse.grpc.payloads import TRACE_METADATA, InvalidSpec, message_types, request_for
from workhorse.results import Drop, ResultSubscription

log = logging.getLogger("workhorse.grpc")

#: The initial metadata key StreamResults sends once it listens.
LISTENING_HEADER = "workhorse-listening"
#: The full name of the service, as health checking and reflection know it.
SERVICE_NAME = jobs_pb2.DESCRIPTOR.services_by_name["Jobs"].full_name


class JobsServicer(jobs_pb2_grpc.JobsServicer):
    """The job service over ``app``.

    ``types`` adds message types for job names beyond those of the app's ``proto_handler``
    registrations (for a server that only enqueues). ``stream_buffer`` results wait per
    ``StreamResults`` stream; past it, the newest are dropped (the stream reads the rest).
    """

    def __init__(self, app: App, *, types: Mapping[str, type[Message]] | None = None,
                 stream_buffer: int = 1000) -> None:
        self.app = app
        self.types = dict(types or {})
        self.stream_buffer = stream_buffer
        #: The subscriptions of open StreamResults calls, for ``end_streams``.
        self._streams: set[ResultSubscription] = set()
        self._stopping = False
        self._types_cache: dict[str, type[Message]] = {}
        self._types_generation = -1

    async def end_streams(self) -> None:
        """End every open ``StreamResults`` call with UNAVAILABLE and refuse new ones: a
        stopping server would otherwise wait its whole grace for streams that never end."""
        self._stopping = True
        for subscription in list(self._streams):
            await subscription.close()

    def _types(self) -> dict[str, type[Message]]:
        # Handlers may be registered after the server starts: the map is rebuilt whenever
        # the app's handlers change (its generation), not on every call.
        if self._types_generation != self.app.generation:
            self._types_cache = {**message_types(self.app), **self.types}
            self._types_generation = self.app.generation
        return self._types_cache

    async def Enqueue(self, request: jobs_pb2.EnqueueRequest,
                      context: grpc.aio.ServicerContext) -> jobs_pb2.EnqueueResponse:
        try:
            types = self._types()
            trace = {key: value for key, value in context.invocation_metadata() or ()
                     if key in TRACE_METADATA and isinstance(value, str)}
            # Every spec is checked before any is written: a bad one enqueues nothing.
            requests = [request_for(spec, types, trace=trace) for spec in request.jobs]
            refs = await self.app.enqueue_many(requests)
        except Exception as exc:
            await abort_for(context, exc)
        return jobs_pb2.EnqueueResponse(jobs=[
            jobs_pb2.EnqueuedJob(id=ref.id) if ref is not None
            else jobs_pb2.EnqueuedJob(duplicate=True) for ref in refs])

    async def GetJob(self, request: jobs_pb2.GetJobRequest,
                     context: grpc.aio.ServicerContext) -> jobs_pb2.Job:
        try:
            view = await self.app.admin.job(request.id)
            if view is None:
                raise JobNotFound(f"no job {request.id}")
        except Exception as exc:
            await abort_for(context, exc)
        return job_message(view)

    async def CancelJob(self, request: jobs_pb2.CancelJobRequest,
                        context: grpc.aio.ServicerContext) -> jobs_pb2.CancelJobResponse:
        try:
            state = await self.app.cancel(request.id)
            if state is None:
                raise JobNotFound(f"no job {request.id}")
        except Exception as exc:
            await abort_for(context, exc)
        return jobs_pb2.CancelJobResponse(state=state_message(state))

    async def StreamResults(self, request: jobs_pb2.StreamResultsRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[jobs_pb2.Result]:
        if self._stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        subscription = self.app.subscribe_results(
            self.stream_buffer, Drop.NEWEST, job_ids=list(request.job_ids) or None,
            names=list(request.names) or None, queues=list(request.queues) or None)
        self._streams.add(subscription)
        try:
            await subscription.start()
        except Exception as exc:
            self._streams.discard(subscription)
            await subscription.close()
            await abort_for(context, exc)
        # A client's deadline or cancel ends this generator (CancelledError at a yield or
        # a wait) and closes the subscription; no job is touched. Only CancelJob cancels.
        try:
            # Sent once listening: a client that waits for it misses no later result.
            await context.send_initial_metadata(((LISTENING_HEADER, "1"),))
            try:
                async for result in subscription:
                    yield result_message(result)
            except Exception as exc:  # the store's feed failed: the stream ends with it
                await abort_for(context, exc)
            if self._stopping:  # end_streams closed it: the caller may retry elsewhere
                await context.abort(grpc.StatusCode.UNAVAILABLE, "the server is stopping")
        finally:
            self._streams.discard(subscription)
            await subscription.close()

    async def ListQueues(self, request: jobs_pb2.ListQueuesRequest,
                         context: grpc.aio.ServicerContext) -> jobs_pb2.ListQueuesResponse:
        try:
            queues = await self.app.admin.queues()
        except Exception as exc:
            await abort_for(context, exc)
        return jobs_pb2.ListQueuesResponse(queues=[queue_message(q) for q in queues])

    async def Stats(self, request: jobs_pb2.StatsRequest,
                    context: grpc.aio.ServicerContext) -> jobs_pb2.StatsResponse:
        try:
            stats = await self.app.admin.stats()
        except Exception as exc:
            await abort_for(context, exc)
        return stats_message(stats)

    async def RetryJob(self, request: jobs_pb2.RetryJobRequest,
                       context: grpc.aio.ServicerContext) -> jobs_pb2.RetryJobResponse:
        try:
            retried = await self.app.admin.retry(request.id)
            view = None if retried else await self.app.admin.job(request.id)
        except Exception as exc:
            await abort_for(context, exc)
        if not retried:
            if view is None:
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no job {request.id}")
                return jobs_pb2.RetryJobResponse()  # not reached: abort raises
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"job {request.id} is {view.state}: only dead, retrying or "
                                "cancelled jobs can be retried")
        return jobs_pb2.RetryJobResponse()

    async def PauseQueue(self, request: jobs_pb2.PauseQueueRequest,
                         context: grpc.aio.ServicerContext) -> jobs_pb2.PauseQueueResponse:
        try:
            _require_queue(request.queue)
            await self.app.admin.pause(request.queue)
        except Exception as exc:
            await abort_for(context, exc)
        return jobs_pb2.PauseQueueResponse()

    async def ResumeQueue(self, request: jobs_pb2.ResumeQueueRequest,
                          context: grpc.aio.ServicerContext) -> jobs_pb2.ResumeQueueResponse:
        try:
            _require_queue(request.queue)
            await self.app.admin.resume(request.queue)
        except Exception as exc:
            await abort_for(context, exc)
        return jobs_pb2.ResumeQueueResponse()


def _require_queue(queue: str) -> None:
    if not queue:
        raise InvalidSpec("a queue name is needed")


def status_for(exc: BaseException) -> Any:
    """The gRPC status code of a workhorse error (INTERNAL for anything unexpected)."""
    if isinstance(exc, JobNotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(exc, QueueFull | StoreFull):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, StoreError):
        return grpc.StatusCode.UNAVAILABLE
    # InvalidSpec and ConfigurationError are ValueErrors; SerializationError a TypeError.
    if isinstance(exc, ValueError | SerializationError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


async def abort_for(context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
    """End the call with the status of ``exc``; an unexpected error is logged (without the
    request, which may hold personal data) and reported as INTERNAL."""
    code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        # The frames but not the message, which may quote the request's args.
        log.error("gRPC call failed with %s:\n%s", type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        message = "internal error"
    else:
        message = str(exc)
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


def add_jobs_service(server: grpc.aio.Server, app: App, *,
                     types: Mapping[str, type[Message]] | None = None) -> JobsServicer:
    """Add the job service over ``app`` to a ``grpc.aio`` server of your own."""
    servicer = JobsServicer(app, types=types)
    jobs_pb2_grpc.add_JobsServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return servicer
