"""``Client``: a small asyncio client of the job service.

    async with wh.grpc.Client("127.0.0.1:50051", token="s3cret") as client:
        job_id = await client.enqueue("send_email", {"address": "a@b.c"})
        print(await client.result(job_id, timeout=10))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.protobuf.message import Message

from workhorse import codec
from workhorse.backends.base import State
from workhorse.errors import JobFailed
from workhorse.grpc._proto.workhorse.v1 import jobs_pb2, jobs_pb2_grpc
from workhorse.grpc.messages import state_of
from workhorse.grpc.servicer import LISTENING_HEADER

#: The job states that end a job.
_FINISHED = frozenset({State.SUCCEEDED, State.DEAD, State.CANCELLED})


class Client:
    """A client of the job service at ``target`` (``host:port``).

    ``token`` is sent as ``authorization: Bearer <token>``; ``metadata`` with every call.
    TLS: ``ca`` (PEM bytes or a path) checks the server's certificate (``tls=True`` with
    no ``ca`` uses the system's roots); ``cert`` and ``key`` present a client certificate
    for mutual TLS. ``timeout`` is the deadline of each call but the result streams'. Errors
    are ``grpc.aio.AioRpcError`` with the service's status code.
    """

    def __init__(self, target: str, *, token: str | None = None,
                 metadata: Mapping[str, str] | None = None, tls: bool = False,
                 ca: bytes | str | Path | None = None, cert: bytes | str | Path | None = None,
                 key: bytes | str | Path | None = None, timeout: float | None = None) -> None:
        self.target = target
        #: The deadline, in seconds, of each unary call (None: none).
        self.timeout = timeout
        self._metadata = tuple({**(metadata or {}),
                                **({"authorization": f"Bearer {token}"} if token else {})
                                }.items())
        if tls or ca is not None or cert is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_pem(ca), private_key=_pem(key), certificate_chain=_pem(cert))
            self.channel = grpc.aio.secure_channel(target, credentials)
        else:
            self.channel = grpc.aio.insecure_channel(target)
        self.stub = jobs_pb2_grpc.JobsStub(self.channel)  # type: ignore[no-untyped-call]

    def _call(self) -> dict[str, Any]:
        """The metadata and deadline of a unary call."""
        return {"metadata": self._metadata, "timeout": self.timeout}

    async def enqueue(self, name: str, args: Any = None, *, queue: str | None = None,
                      priority: int | None = None, delay: float | None = None,
                      at: datetime | float | None = None, unique: bool = False,
                      unique_key: str | None = None, idempotency_key: str | None = None,
                      correlation_id: str | None = None,
                      metadata: Mapping[str, str] | None = None,
                      job_timeout: float | None = None) -> str | None:
        """Enqueue one job; its id, or None if a live unique job is its duplicate.

        ``args`` is a JSON-ready value or a protobuf message (sent as an ``Any``).
        """
        spec = job_spec(name, args, queue=queue, priority=priority, delay=delay, at=at,
                        unique=unique, unique_key=unique_key, idempotency_key=idempotency_key,
                        correlation_id=correlation_id, metadata=metadata,
                        job_timeout=job_timeout)
        (job_id,) = await self.enqueue_many([spec])
        return job_id

    async def enqueue_many(self, specs: Iterable[jobs_pb2.JobSpec]) -> list[str | None]:
        """Enqueue a batch atomically (build specs with ``job_spec``); ids in order, None
        for duplicates. One bad spec fails the call and enqueues nothing."""
        response = await self.stub.Enqueue(jobs_pb2.EnqueueRequest(jobs=list(specs)),
                                           **self._call())
        return [None if job.duplicate else job.id for job in response.jobs]

    async def get_job(self, job_id: str) -> jobs_pb2.Job:
        """One job as the service shows it (NOT_FOUND if unknown)."""
        job: jobs_pb2.Job = await self.stub.GetJob(jobs_pb2.GetJobRequest(id=job_id),
                                                   **self._call())
        return job

    async def state(self, job_id: str) -> State:
        """Where the job is now."""
        return state_of((await self.get_job(job_id)).state)

    async def cancel(self, job_id: str) -> State:
        """Cancel a job; its state after the call (RUNNING until its worker stops it)."""
        response = await self.stub.CancelJob(jobs_pb2.CancelJobRequest(id=job_id),
                                             **self._call())
        return state_of(response.state)

    async def retry(self, job_id: str) -> None:
        """Run a dead, retrying or cancelled job again now."""
        await self.stub.RetryJob(jobs_pb2.RetryJobRequest(id=job_id), **self._call())

    async def pause(self, queue: str) -> None:
        """Stop workers from taking jobs of ``queue``."""
        await self.stub.PauseQueue(jobs_pb2.PauseQueueRequest(queue=queue),
                                   **self._call())

    async def resume(self, queue: str) -> None:
        """Let workers take jobs of ``queue`` again."""
        await self.stub.ResumeQueue(jobs_pb2.ResumeQueueRequest(queue=queue),
                                    **self._call())

    async def queues(self) -> list[jobs_pb2.Queue]:
        """Every queue with its counts by state."""
        response = await self.stub.ListQueues(jobs_pb2.ListQueuesRequest(),
                                              **self._call())
        return list(response.queues)

    async def stats(self) -> jobs_pb2.StatsResponse:
        """Totals over the whole store."""
        stats: jobs_pb2.StatsResponse = await self.stub.Stats(jobs_pb2.StatsRequest(),
                                                              **self._call())
        return stats

    @contextlib.asynccontextmanager
    async def results(self, *, job_ids: Iterable[str] = (), names: Iterable[str] = (),
                      queues: Iterable[str] = (), timeout: float | None = None
                      ) -> AsyncIterator[AsyncIterator[jobs_pb2.Result]]:
        """Stream the results of jobs finishing from now on, filtered:

            async with client.results(names=["resize"]) as results:
                async for result in results: ...

        Entering returns once the server listens, so no result of a job enqueued inside
        the block is missed. ``timeout`` is the stream's deadline; leaving the block or the
        deadline ends the stream and never cancels a job.
        """
        call = self.stub.StreamResults(
            jobs_pb2.StreamResultsRequest(job_ids=list(job_ids), names=list(names),
                                          queues=list(queues)),
            metadata=self._metadata, timeout=timeout)
        try:
            metadata = await call.initial_metadata()
            if not any(key == LISTENING_HEADER for key, _ in metadata or ()):
                async for _ in call:  # the call failed before listening: raises its error
                    pass
                raise ConnectionError("the server ended the result stream before it started")
            yield _messages(call)
        finally:
            call.cancel()

    async def result(self, job_id: str, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return its result (decoded JSON).

        Raises JobFailed if it ended dead or cancelled, TimeoutError if it is still live
        after ``timeout`` seconds (it keeps running: only ``cancel`` stops a job),
        ConnectionError if the server ended the stream first.
        """
        try:
            async with self.results(job_ids=[job_id], timeout=timeout) as results:
                job = await self.get_job(job_id)  # it may have finished before we listened
                if state_of(job.state) in _FINISHED:
                    return _outcome(job_id, job.state, job.status, job.json_result, job.error)
                async for found in results:
                    return _outcome(job_id, found.state, found.status, found.json_result,
                                    found.error)
            raise ConnectionError(f"the result stream ended before job {job_id} finished")
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.DEADLINE_EXCEEDED:
                raise
        raise TimeoutError(f"job {job_id} did not finish within {timeout}s")

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()


def job_spec(name: str, args: Any = None, *, queue: str | None = None,
             priority: int | None = None, delay: float | None = None,
             at: datetime | float | None = None, unique: bool = False,
             unique_key: str | None = None, idempotency_key: str | None = None,
             correlation_id: str | None = None, metadata: Mapping[str, str] | None = None,
             job_timeout: float | None = None) -> jobs_pb2.JobSpec:
    """A ``JobSpec`` for ``Client.enqueue_many``; ``args`` is JSON-ready or a message."""
    spec = jobs_pb2.JobSpec(name=name, queue=queue or "", unique=unique,
                            unique_key=unique_key or "", idempotency_key=idempotency_key or "",
                            correlation_id=correlation_id or "", metadata=dict(metadata or {}))
    if isinstance(args, Message):
        packed = any_pb2.Any()
        packed.Pack(args)
        spec.proto_args.CopyFrom(packed)
    elif args is not None:
        spec.json_args = codec.encode(args, what="args").decode()
    if priority is not None:
        spec.priority = priority
    if delay is not None and at is not None:
        raise ValueError("give either delay= or at=, not both")
    if delay is not None:
        spec.delay.CopyFrom(_duration(delay))
    elif at is not None:
        stamp = timestamp_pb2.Timestamp()
        epoch = at.timestamp() if isinstance(at, datetime) else float(at)
        stamp.FromNanoseconds(round(epoch * 1e9))
        spec.run_at.CopyFrom(stamp)
    if job_timeout is not None:
        spec.timeout.CopyFrom(_duration(job_timeout))
    return spec


def _duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def _outcome(job_id: str, state: jobs_pb2.State, status: int, json_result: str,
             error: str) -> Any:
    if state_of(state) is not State.SUCCEEDED:
        raise JobFailed(job_id, status or 500, error or None)
    return codec.decode(json_result) if json_result else None


async def _messages(call: Any) -> AsyncIterator[jobs_pb2.Result]:
    async for message in call:
        yield message


def _pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()
