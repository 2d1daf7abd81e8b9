"""Consume a Source: one job per message through its handler's chain; the status settles it.

Shared by ``Worker.consume`` and ``LocalWorker.perform_receive``. Per message the retry
policy of the handler decides (``workhorse.retry.decide``, the attempt being the message's
delivery count): success and cancel ack; a retryable status with retries left nacks with
the handler's backoff; anything else dead-letters, into the source's own dead letters where
it has them, else into a workhorse dead job holding the message, and then acks.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from workhorse import codec
from workhorse.backends.base import WORKER_LOST, JobRecord, State
from workhorse.hooks import EventKind
from workhorse.job import Job, new_job_id
from workhorse.reports import local_event, log_finish, wants_line
from workhorse.retry import Action, Decision, decide
from workhorse.runner import Runner
from workhorse.sources.base import Message, Source
from workhorse.status import Status
from workhorse.tasks import TaskSet

if TYPE_CHECKING:
    from workhorse.app import App

log = logging.getLogger("workhorse.source")

#: Headers a workhorse dead job made from a message carries, besides the message's own.
SOURCE_HEADER = "workhorse-source"
MESSAGE_ID_HEADER = "workhorse-message-id"


@dataclasses.dataclass
class ConsumerStats:
    """What a consumer has done so far; each message counts once per delivery."""

    #: Messages taken from the source.
    received: int = 0
    #: Settled as done (success, 444, cancelled), including those moved to a dead job.
    acked: int = 0
    #: Given back for redelivery (retryable failure, or in flight when the consumer stopped).
    nacked: int = 0
    #: Dead-lettered: in the source's dead letters or kept as a workhorse dead job.
    dead: int = 0
    #: Settle calls that failed (the server went away): the server redelivers those.
    unsettled: int = 0


class Consumer:
    """Runs handler ``handler`` once per message of ``source``, up to ``concurrency`` at once.

    ``run()`` reads until the source ends or ``stop()`` is called. ``stop()`` stops reading;
    runs in flight get ``grace`` seconds to finish and settle, the rest are cancelled and
    their messages nacked, so none is lost; then the source is closed. ``stats`` counts what
    was received, acked, nacked and dead; a progress line is logged on ``workhorse.source``
    every ``progress_interval`` seconds while the counts move (never with payloads).
    """

    def __init__(self, app: App, source: Source, handler: str, *, concurrency: int = 10,
                 template: Job[Any] | None = None, grace: float = 30.0,
                 progress_interval: float = 60.0, log_runs: bool = True,
                 log_payloads: bool = False, worker_id: str | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.app = app
        self.source = source
        self.handler = handler
        self.concurrency = concurrency
        self.grace = grace
        self.progress_interval = progress_interval
        self.log_runs = log_runs
        self.log_payloads = log_payloads
        self.worker_id = worker_id or f"consumer:{source.name}"
        self.stats = ConsumerStats()
        self._template = template
        self._runner = Runner(app, threads=concurrency, thread_name="workhorse-consume")
        self._slots = asyncio.Semaphore(concurrency)
        self._runs = TaskSet(f"consume-{source.name}")
        self._reader: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = asyncio.Event()
        self._hurry = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Consume until the source ends or ``stop()``; then the source is closed."""
        app_handler = self.app.registry.get(self.handler)  # UnknownHandlerError at once
        log.info("consuming %s with handler %s (concurrency %d)", self.source.name,
                 app_handler.name, self.concurrency)
        progress = asyncio.get_running_loop().create_task(
            self._progress_loop(), name=f"consume:{self.source.name}:progress")
        self._reader = asyncio.current_task()
        try:
            await self._read()
            await self._runs.wait()
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()  # stop() cancelled the reading; it finishes the rest
        finally:
            progress.cancel()
            if not self._stopping:
                await self._finish(graceful=True, timeout=self.grace)

    async def stop(self, *, graceful: bool = True, timeout: float | None = None) -> None:
        """Stop reading; in-flight runs finish within ``timeout`` (default ``grace``) if
        ``graceful``, the rest are cancelled and nacked; then close the source."""
        if self._stopping:
            if not graceful:
                self._hurry.set()  # a stop_now() during a graceful stop ends the grace
            await self._closed.wait()
            return
        self._stopping = True
        reader = self._reader
        if reader is not None and reader is not asyncio.current_task():
            # Again until it ends: a source's client library may swallow one cancellation
            # (the Redis Streams source guards its blocking read with tasks.cancellable;
            # a source of someone else's may not).
            while not reader.done():
                reader.cancel()
                await asyncio.wait({reader}, timeout=0.2)
        await self._finish(graceful=graceful, timeout=self.grace if timeout is None else timeout)

    async def _finish(self, *, graceful: bool, timeout: float | None) -> None:
        self._stopping = True
        try:
            if graceful and not self._hurry.is_set():
                waiting = asyncio.ensure_future(self._runs.wait(timeout))
                hurry = asyncio.ensure_future(self._hurry.wait())
                await asyncio.wait({waiting, hurry}, return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                hurry.cancel()
            await self._runs.cancel()  # each cancelled run nacks its message first
            await self._runner.close(timeout=5.0)
            try:
                await self.source.close()
            except Exception:
                log.exception("closing %s failed", self.source.name)
            self._log_progress("stopped")
        finally:
            self._closed.set()

    # -- reading -----------------------------------------------------------------------------

    async def _read(self) -> None:
        """Read until the source ends or the consumer stops. A source whose reading fails
        (a bug, an error it does not retry) is read again after a pause, so a live worker
        never silently stops consuming."""
        pause = 0.05
        while not self._stopping:
            try:
                await self._read_messages()
                return
            except Exception:
                log.exception("%s: reading failed; reading again in %.2fs", self.source.name,
                              pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 5.0)

    async def _read_messages(self) -> None:
        messages = self.source.messages(self.concurrency)
        try:
            while not self._stopping:
                # Take a slot before asking for the next message: back-pressure on the source.
                await self._slots.acquire()
                try:
                    message = await anext(messages)
                except StopAsyncIteration:
                    self._slots.release()
                    return
                except BaseException:
                    self._slots.release()
                    raise
                self.stats.received += 1
                self._runs.spawn(self._handle(message), f"message:{message.id}")
        finally:
            await _close_iterator(messages)

    # -- one message -------------------------------------------------------------------------

    async def _handle(self, message: Message) -> None:
        try:
            job = self._job_for(message)
            spent = self._delivered_too_often(job)
            if spent is not None:
                # Its earlier deliveries all ended without a settle (consumers killed or
                # crashed on it, as a poison message does): count them as failed runs.
                job.status, job.error = Status.INTERNAL_ERROR, WORKER_LOST
                await self._settle(message, job, spent)
                return
            await self._emit("start", job)
            try:
                await self._runner.run(job)
            except asyncio.CancelledError:
                if not self._stopping:
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self._settle(message, job, Decision(Action.RETRY), interrupted=True)
                return
            options = self.app.registry.get(job.name).options if (
                job.name in self.app.registry) else None
            decision = (decide(job.status, job.attempt, options) if options is not None
                        else Decision(Action.BURY))
            await self._settle(message, job, decision)
        finally:
            self._slots.release()

    def _delivered_too_often(self, job: Job[Any]) -> Decision | None:
        """The BURY decision for a message whose deliveries before this one used up the
        handler's retries (the durable worker counts a lost run as a failed one too); None
        if it may run."""
        if job.attempt <= 1 or job.name not in self.app.registry:
            return None
        options = self.app.registry.get(job.name).options
        decision = decide(Status.INTERNAL_ERROR, job.attempt - 1, options)
        return None if decision.action is Action.RETRY else decision

    def _job_for(self, message: Message) -> Job[Any]:
        body = message.body
        template = self._template
        if template is not None:
            job = template.for_run(new_id=True)
            job.headers.update(message.headers)
        else:
            queue = (self.app.registry.get(self.handler).options.queue
                     if self.handler in self.app.registry else "default")
            job = Job(self.handler, queue=queue, headers=dict(message.headers))
        job.args = body if isinstance(body, dict) else {}
        job.message = body
        job.attempt = max(1, message.deliveries)
        return job

    async def _settle(self, message: Message, job: Job[Any], decision: Decision, *,
                      interrupted: bool = False) -> None:
        """Carry ``decision`` to the source; the finish hooks and log line say where it went."""
        state: State | None
        try:
            if decision.action in (Action.SUCCEED, Action.CANCEL):
                await message.ack()
                self.stats.acked += 1
                state = State.SUCCEEDED if decision.action is Action.SUCCEED else State.CANCELLED
            elif decision.action is Action.RETRY:
                await message.nack(decision.delay)
                self.stats.nacked += 1
                state = State.READY if interrupted else State.RETRYING
            else:
                state = await self._dead(message, job, keep=decision.keep)
        except Exception as exc:
            self.stats.unsettled += 1
            log.warning("%s: message %s could not be settled (%s); the server will deliver "
                        "it again", self.source.name, message.id, exc)
            state = None
        await self._finished(job, state)

    async def _dead(self, message: Message, job: Job[Any], *, keep: bool) -> State:
        reason = job.error or f"status {int(job.status)}"
        if not keep:  # the handler opted out of dead jobs (skip_dead): drop the message
            await message.ack()
            self.stats.acked += 1
            return State.DEAD
        if not await message.dead_letter(reason):
            try:
                await self._store_dead_job(message, job, reason)
            except Exception as exc:
                # Keep the message rather than lose it: it comes back and dies again later.
                log.warning("%s: message %s could not be kept as a dead job (%s); nacked",
                            self.source.name, message.id, exc)
                await message.nack(self.grace)
                self.stats.nacked += 1
                return State.RETRYING
            await message.ack()
            self.stats.acked += 1
        self.stats.dead += 1
        return State.DEAD

    async def _store_dead_job(self, message: Message, job: Job[Any], reason: str) -> None:
        """Keep ``message`` as a DEAD job of the handler in the app's store, in one atomic
        write (``Backend.restore``): retried from the dashboard or CLI, it runs again."""
        backend = await self.app.backend()
        now = await backend.now()
        headers = {**message.headers, SOURCE_HEADER: self.source.name,
                   MESSAGE_ID_HEADER: message.id}
        record = JobRecord(
            id=new_job_id(), name=job.name, queue=job.queue,
            payload=codec.encode(_args_holding(message.body), what="message"),
            headers=headers, priority=job.priority, timeout=job.timeout, state=State.DEAD,
            attempt=job.attempt, run_at=now, enqueued_at=job.enqueued_at,
            started_at=job.started_at, finished_at=job.finished_at or now,
            status=int(job.status), error=reason, traceback=job.traceback)
        if not (await backend.restore([record]))[0]:
            raise RuntimeError(f"the store refused dead job {record.id}")

    # -- reporting ---------------------------------------------------------------------------

    async def _emit(self, kind: EventKind, job: Job[Any], state: State | None = None) -> None:
        hooks = self.app.lifecycle_hooks
        if hooks.of(kind):
            event = dataclasses.replace(local_event(kind, job), worker_id=self.worker_id)
            if kind == "finish":
                event = dataclasses.replace(event, state=state)
            await hooks.emit(event)

    async def _finished(self, job: Job[Any], state: State | None) -> None:
        quiet = state in (State.SUCCEEDED, State.CANCELLED, State.READY)
        level = logging.INFO if quiet else logging.WARNING
        if self.log_runs and wants_line(job, level):
            event = dataclasses.replace(local_event("finish", job), state=state,
                                        worker_id=self.worker_id)
            log_finish(event, level, payloads=self.log_payloads)
        await self._emit("finish", job, state)

    async def _progress_loop(self) -> None:
        last = dataclasses.astuple(self.stats)
        while True:
            await asyncio.sleep(self.progress_interval)
            now = dataclasses.astuple(self.stats)
            if now != last:
                self._log_progress("progress")
                last = now

    def _log_progress(self, what: str) -> None:
        s = self.stats
        log.info("%s %s: received %d, acked %d, nacked %d, dead %d, unsettled %d, in flight %d",
                 self.source.name, what, s.received, s.acked, s.nacked, s.dead, s.unsettled,
                 len(self._runs))


def _args_holding(body: Any) -> Any:
    """The args of a dead job that keeps ``body``: the body itself when it is a JSON object,
    else ``{"message": body}`` (``{"message_base64": ...}`` for bytes)."""
    if isinstance(body, dict):
        return body
    if isinstance(body, bytes | bytearray | memoryview):
        return {"message_base64": base64.b64encode(bytes(body)).decode("ascii")}
    return {"message": body}


async def _close_iterator(messages: AsyncIterator[Message]) -> None:
    aclose = getattr(messages, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()

